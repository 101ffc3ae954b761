"""Training throughput of biocap-train against OpenCLIP's own trainer, and JPEG draft decoding.

    uv run --group bench python benchmarks/train_throughput.py [--repeats 3] [--out DIR]

1. Trainer: the same tiny model (BioCAP-toy), the same toy shards, one fixed text type
   (taxon_com; OpenCLIP reads it from a ``txt`` member the script adds), the same batch size,
   workers, precision and threads. Each trainer runs as one process invocation per repeat,
   alternating; samples/s is the median of each run's logged intervals after the first
   (warm-up). Prints both figures and ours/OpenCLIP.
2. Loader: samples/s of biocap-train's data stream on TreeOfLife-size JPEGs (toy images
   rendered at 512 and 1024 px) with and without PIL draft decoding, for a 224 px crop.
3. On a CUDA machine, within --budget-s of GPU time: ViT-B-16 at batch 512 on synthetic batches,
   each step route alone and together (see ROUTES): samples/s, MFU (FLOPs of one step
   by torch.utils.flop_counter over the datasheet's dense bf16 peak) and the loss curve against
   the baseline's; then end to end from TreeOfLife-sized JPEG shards through biocap-train's own
   data path (``TrainBatches``, as ``--gpu-decode`` off and on) and the CPU cores kept busy; and
   projected H100-hours for 500M samples. Writes gpu.json.

Prints figures only; nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH, WORKERS, PRECISION, TEXT_TYPE, SAMPLES = 64, 1, "fp32", "taxon_com", 2048


def bench_shards(root: Path) -> str:
    """Toy train shards with an extra ``txt`` member (= taxon_com.txt) for OpenCLIP."""
    import webdataset as wds

    from biocap_core.shards import iter_samples
    from biocap_core.toy import ToyConfig, generate

    toy = root / "toy"
    if not (toy / "manifest.json").is_file():
        generate(toy, ToyConfig())
    out = root / "shards"
    out.mkdir(exist_ok=True)
    sizes = {}
    for shard in sorted((toy / "train").glob("shard-*.tar")):
        target = out / shard.name
        if not target.exists():
            with wds.TarWriter(str(target)) as sink:
                for s in iter_samples(str(shard)):
                    sample = {
                        k: v for k, v in s.items() if not k.startswith("__") or k == "__key__"
                    }
                    sample["txt"] = sample[f"{TEXT_TYPE}.txt"]
                    sink.write(sample)
        sizes[shard.name] = json.loads((toy / "train" / "sizes.json").read_text())[shard.name]
    (out / "sizes.json").write_text(json.dumps(sizes))
    return str(out / f"shard-{{000000..{len(sizes) - 1:06d}}}.tar")


def _shared_flags(shards: str, logs: Path, name: str) -> list[str]:
    """The run's flags, which both trainers take under the same names (biocap-train uses OpenCLIP's
    wherever OpenCLIP has the option)."""
    return [
        *("--train-data", shards, "--model", "BioCAP-toy"),
        *("--batch-size", str(BATCH), "--workers", str(WORKERS), "--precision", PRECISION),
        *("--epochs", "1", "--train-num-samples", str(SAMPLES), "--lr", "1e-3", "--warmup", "10"),
        *("--logs", str(logs), "--name", name, "--log-every-n-steps", "4"),
        *("--save-frequency", "0", "--device", "cpu"),
    ]


def run_ours(shards: str, logs: Path, name: str, env: dict) -> float:
    cmd = [
        *(sys.executable, "-m", "biocap_train"),
        *_shared_flags(shards, logs, name),
        *("--text-type", TEXT_TYPE, "--no-progress"),
    ]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    rates = [
        json.loads(line)["samples_per_s"]
        for line in (logs / name / "metrics.jsonl").read_text().splitlines()
        if '"kind": "train"' in line
    ]
    return statistics.median(rates[1:])


_OPEN_CLIP_MAIN = (
    "import sys, open_clip, biocap_core.model;"
    "open_clip.add_model_config(biocap_core.model.MODEL_CONFIG_DIR);"
    "from open_clip_train.main import main; main(sys.argv[1:])"
)


def run_open_clip(shards: str, logs: Path, name: str, env: dict) -> float:
    cmd = [
        *(sys.executable, "-c", _OPEN_CLIP_MAIN),
        *_shared_flags(shards, logs, name),
        *("--dataset-type", "webdataset"),
    ]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    text = (logs / name / "out.log").read_text()
    times = [float(t) for t in re.findall(r"Batch \(t\): ([\d.]+),", text)]
    return statistics.median(BATCH / t for t in times[1:])


def trainer_comparison(root: Path, repeats: int, threads: str | None) -> None:
    shards = bench_shards(root)
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = threads
    ours, theirs = [], []
    for i in range(repeats):
        ours.append(run_ours(shards, root / "logs", f"ours-{threads}-{i}-{time.time_ns()}", env))
        theirs.append(
            run_open_clip(shards, root / "logs", f"openclip-{threads}-{i}-{time.time_ns()}", env)
        )
        print(
            f"  repeat {i + 1}: biocap-train {ours[-1]:7.1f} samples/s   OpenCLIP {theirs[-1]:7.1f}"
            " samples/s",
            flush=True,
        )
    a, b = statistics.median(ours), statistics.median(theirs)
    print(
        f"trainer (BioCAP-toy, batch {BATCH}, {WORKERS} worker, {PRECISION},"
        f" OMP_NUM_THREADS={threads or 'unset'}, CPU): biocap-train {a:.1f} samples/s, OpenCLIP"
        f" {b:.1f} samples/s, ratio {a / b:.2f}x"
    )


def loader_comparison(root: Path, sizes=(512, 1024), n_images=128) -> None:
    import open_clip
    import torch

    from biocap_core.shards import expand_sources
    from biocap_core.toy import ToyConfig, generate
    from biocap_train.image_prep import WorkerDecode
    from biocap_train.schedule import TextSchedule
    from biocap_train.streams import StreamSpec, TrainStream, loader

    torch.set_num_threads(1)  # as inside a DataLoader worker
    tokenizer = open_clip.SimpleTokenizer(context_length=77)
    for size in sizes:
        toy = root / f"toy-{size}px"
        if not (toy / "manifest.json").is_file():
            generate(
                toy,
                ToyConfig(
                    species=16,
                    images_per_species=n_images // 16,
                    val_per_species=1,
                    eval_per_species=1,
                    inquire_queries=2,
                    inquire_candidates=4,
                    image_size=size,
                    shard_size=64,
                ),
            )
        urls, _ = expand_sources(
            "::".join(str(p) for p in sorted((toy / "train").glob("shard-*.tar")))
        )
        rates = {}
        for draft in (None, 224):
            spec = StreamSpec(
                urls=urls,
                weights=None,
                resampled=False,
                batch_size=32,
                epoch=0,
                rank=0,
                world_size=1,
                num_streams=1,
                microbatches=2 * n_images // 32,
                first_step=0,
                accum_freq=1,
                prep=WorkerDecode(224, train=True, draft_size=draft),
                tokenizer=tokenizer,
                texts=TextSchedule(0, TEXT_TYPE),
                shuffle_buffer=64,
            )
            best = 0.0
            for _ in range(3):
                start, n = time.perf_counter(), 0
                for batch in loader(TrainStream(spec), 0):
                    n += len(batch.image)
                best = max(best, n / (time.perf_counter() - start))
            rates[draft] = best
        print(
            f"loader, {size} px JPEGs -> 224 px crop, 1 process: full decode {rates[None]:.1f}"
            f" samples/s, draft decode {rates[224]:.1f} samples/s"
            f" ({rates[224] / rates[None]:.2f}x)",
            flush=True,
        )


# (dense bf16 FLOP/s, memory bytes/s) from the datasheets; the first name contained in the device's
# name wins
GPU_SPECS = {
    "H200": (989e12, 4.8e12),
    "H100 PCIe": (756e12, 2.0e12),
    "H100": (989e12, 3.35e12),
    "A100": (312e12, 2.0e12),
    "L40S": (362e12, 0.86e12),
    "A10": (125e12, 0.6e12),
}
H100 = GPU_SPECS["H100"]
#: a route tracks the baseline's loss curve if every step's loss is within this fraction of the
#: baseline's
LOSS_RTOL = 0.02
PROJECTED_SAMPLES = 500e6


def _route(name, causal=True, fused=True, compile_mode=None, precision="amp_bf16"):
    return {
        "name": name,
        "causal": causal,
        "fused": fused,
        "compile": compile_mode,
        "precision": precision,
    }


#: In order of importance, so a tight budget still measures the baseline, all routes and the data
#: path. "baseline" is the step with none of the routes (explicit causal mask, PyTorch's default
#: AdamW, eager).
ROUTES = [
    _route("baseline", causal=False, fused=False),
    _route("eager-all"),
    _route("compile-all", compile_mode="default"),
    _route("causal-only", fused=False),
    _route("fused-only", causal=False),
    _route("compile-baseline", causal=False, fused=False, compile_mode="default"),
    _route("autotune-all", compile_mode="max-autotune-no-cudagraphs"),
    _route("compile-all-bf16", compile_mode="default", precision="bf16"),
]


class Budget:
    """Seconds left of the GPU budget; a part that would start after it is skipped, not cut
    short."""

    def __init__(self, seconds: float):
        self.seconds, self.began = seconds, time.perf_counter()

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.began)


def _cpu_busy() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat (Linux), for the cores a part kept busy."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return None
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _cores_used(before, after) -> float | None:
    if before is None or after is None or after[1] == before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1]) * os.cpu_count()


def make_trainer(route: dict, model: str, device, steps: int):
    """A Trainer for one route. The routes are applied to the built trainer (the text attention
    class, the optimiser, the compiled forward), so each is measured alone."""
    import torch

    from biocap_core.model import set_causal_text_attention
    from biocap_train import TrainConfig
    from biocap_train.distributed import DistInfo
    from biocap_train.optim import make_optimizer
    from biocap_train.trainer import Trainer

    torch._dynamo.reset()
    cfg = TrainConfig(
        model=model,
        precision=route["precision"],
        text_type=TEXT_TYPE,
        lr=1e-4,
        warmup=10,
        progress=False,
        seed=0,
    )
    trainer = Trainer(cfg, DistInfo(device=device), total_steps=steps)
    set_causal_text_attention(trainer.model, route["causal"])
    trainer.optimizer = make_optimizer(
        trainer.model, cfg.lr, cfg.wd, (cfg.beta1, cfg.beta2), cfg.eps, fused=route["fused"]
    )
    if route["compile"]:
        trainer.forward = torch.compile(trainer.forward, mode=route["compile"])
    return trainer


def synthetic_batches(trainer, batch: int, n: int = 4) -> list:
    """``n`` fixed random batches (seeded, so every route sees the same ones), cycled by the
    steps."""
    import torch

    from biocap_train.batches import Batch
    from biocap_train.schedule import StepText

    gen = torch.Generator().manual_seed(0)
    model = trainer.model
    shape, dev = (batch, model.context_length), trainer.device
    return [
        Batch(
            image=torch.randn(batch, 3, *model.image_size, generator=gen).to(dev),
            text=torch.randint(1, model.vocab_size - 1, shape, generator=gen).to(dev),
            step_text=StepText(TEXT_TYPE),
        )
        for _ in range(n)
    ]


def step_flops(model: str, batch: int, device) -> float:
    """FLOPs of one eager amp_bf16 step (forward, backward, attention) by torch.utils.flop_counter;
    reused for every route, which all do the same arithmetic."""
    from torch.utils.flop_counter import FlopCounterMode

    trainer = make_trainer(_route("count"), model, device, steps=2)
    with FlopCounterMode(display=False) as counter:
        trainer.train_step(0, synthetic_batches(trainer, batch, n=1))
    return counter.get_total_flops()


def time_steps(trainer, batches, steps: int, warmup: int, sync) -> tuple[float, float, list[float]]:
    """(warm-up seconds, seconds per step, the losses of all steps) over ``batches`` cycled."""
    losses, t0 = [], time.perf_counter()
    for step in range(warmup + steps):
        if step == warmup:
            sync()
            warm_s, t0 = time.perf_counter() - t0, time.perf_counter()
        losses.append(trainer.train_step(step, [batches[step % len(batches)]])["loss"])
    sync()
    return warm_s, (time.perf_counter() - t0) / steps, losses


def jpeg_shards(root: Path, n_samples: int, size=(500, 375), per_shard: int = 512) -> list[str]:
    """TreeOfLife-sized JPEG shards: 64 distinct toy photos at ``size`` (quality 90), repeated under
    distinct keys, so every sample is a full-size decode."""
    import io
    import random

    import webdataset as wds

    from biocap_core.toy import BACKGROUNDS, TILTS, make_species, render

    out = root / f"jpeg-{size[0]}x{size[1]}"
    out.mkdir(exist_ok=True)
    species, photos = make_species(16), []
    for i in range(64):
        rng = random.Random(i)
        buf = io.BytesIO()
        render(species[i % 16], rng, 256, rng.choice(list(BACKGROUNDS)), rng.choice(TILTS)).resize(
            size
        ).save(buf, "JPEG", quality=90)
        photos.append((buf.getvalue(), f"species {i % 16}".encode()))
    urls = []
    for s in range(-(-n_samples // per_shard)):
        url = out / f"shard-{s:06d}.tar"
        if not url.exists():
            with wds.TarWriter(str(url)) as sink:
                for k in range(per_shard):
                    jpg, text = photos[(s * per_shard + k) % len(photos)]
                    sink.write({"__key__": f"{s:06d}{k:06d}", "jpg": jpg, f"{TEXT_TYPE}.txt": text})
        urls.append(str(url))
    return urls


def end_to_end(
    trainer,
    urls: list[str],
    batch: int,
    steps: int,
    warmup: int,
    workers: int,
    gpu_decode: bool,
    sync,
) -> dict:
    """Samples/s of the route's train step fed from JPEG shards by biocap-train's own data path
    (``TrainBatches``: the shard stream, its DataLoader workers and, with ``gpu_decode``, the device
    decode; without, PIL in draft mode in the workers), and the CPU cores kept busy meanwhile."""
    import dataclasses

    from biocap_train.distributed import DistInfo
    from biocap_train.run_plan import plan_run
    from biocap_train.train_batches import TrainBatches

    # shards drawn with replacement, so the figure does not depend on the shard count per worker
    cfg = dataclasses.replace(
        trainer.cfg,
        train_data="::".join(urls),
        dataset_resampled=True,
        batch_size=batch,
        train_num_samples=(warmup + steps) * batch,
        workers=workers,
        gpu_decode=gpu_decode,
    )
    info = DistInfo(device=trainer.device)
    data = TrainBatches(cfg, plan_run(cfg, info), info, trainer.model, None, None, say=print)
    n, t0, cpu0 = 0, time.perf_counter(), None
    for step, micro in enumerate(data.steps(0, warmup + steps)):
        if step == warmup:
            sync()
            n, t0, cpu0 = 0, time.perf_counter(), _cpu_busy()
        trainer.train_step(step, micro)
        n += sum(len(b.text) for b in micro)
    sync()
    seconds = time.perf_counter() - t0
    return {
        "decode": "device" if gpu_decode else "cpu (PIL, draft)",
        "workers": workers,
        "steps": steps,
        "samples_per_s": n / seconds,
        "cpu_cores_busy": _cores_used(cpu0, _cpu_busy()),
    }


def gpu_benchmark(
    root: Path,
    budget: Budget,
    device: str = "cuda",
    model: str = "ViT-B-16",
    batch: int = 512,
    steps: int = 30,
    warmup: int = 5,
    e2e_steps: int = 20,
    workers: int = 8,
    only: list[str] | None = None,
    e2e_route: str = "compile-all",
) -> dict:
    """Every route of :data:`ROUTES` on synthetic batches (samples/s, MFU, loss curve against the
    baseline), then the end-to-end data path with CPU and device decoding, within ``budget``."""
    import torch

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    name = torch.cuda.get_device_name(dev) if cuda else "cpu"
    peak, bandwidth = next((v for k, v in GPU_SPECS.items() if k in name), (None, None))
    flops = step_flops(model, batch, dev) / batch
    report = {
        "device": name,
        "model": model,
        "batch": batch,
        "steps": steps,
        "warmup": warmup,
        "tflop_per_sample": flops / 1e12,
        "loss_rtol": LOSS_RTOL,
        "routes": [],
        "end_to_end": [],
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
    }
    baseline_losses, e2e_trainer = None, None
    for route in ROUTES:
        if only and route["name"] not in only:
            continue
        if budget.left() <= 0:
            print(f"  {route['name']}: skipped (past the budget)", flush=True)
            report["routes"].append({**route, "skipped": "budget"})
            continue
        try:
            trainer = make_trainer(route, model, dev, steps + warmup + 1)
            warm_s, seconds, losses = time_steps(
                trainer, synthetic_batches(trainer, batch), steps, warmup, sync
            )
        except (
            Exception
        ) as exc:  # one failing route (e.g. a compile mode) must not lose the others' figures
            print(f"  {route['name']}: failed: {type(exc).__name__}: {exc}", flush=True)
            report["routes"].append({**route, "error": f"{type(exc).__name__}: {exc}"})
            continue
        rate = batch / seconds
        row = {
            **route,
            "samples_per_s": rate,
            "mfu": flops * rate / peak if peak else None,
            "warmup_s": warm_s,
            "losses": losses,
            "max_memory_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if cuda else None,
        }
        if route["name"] == "baseline":
            baseline_losses = losses
        if baseline_losses is not None:
            rel = max(abs(a - b) / abs(b) for a, b in zip(losses, baseline_losses))
            row.update(max_loss_rel_diff=rel, tracks_baseline=rel <= LOSS_RTOL)
        report["routes"].append(row)
        mfu = f", MFU {100 * row['mfu']:.1f}%" if peak else ""
        tracks = (
            f", loss within {100 * row['max_loss_rel_diff']:.2f}% of baseline"
            if "max_loss_rel_diff" in row
            else ""
        )
        print(
            f"  {route['name']}: {rate:.0f} samples/s{mfu}, warm-up {warm_s:.0f} s{tracks}",
            flush=True,
        )
        if route["name"] == e2e_route:
            e2e_trainer = trainer
        else:
            del trainer
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
    if e2e_trainer is not None:
        urls = jpeg_shards(
            root, (e2e_steps + warmup) * batch * 2
        )  # two passes' worth: workers split the shards
        for gpu_decode in (False, True):
            if budget.left() <= 0:
                report["end_to_end"].append({"gpu_decode": gpu_decode, "skipped": "budget"})
                continue
            row = end_to_end(e2e_trainer, urls, batch, e2e_steps, warmup, workers, gpu_decode, sync)
            report["end_to_end"].append(row)
            print(
                f"  end to end, {row['decode']} decode, {workers} workers:"
                f" {row['samples_per_s']:.0f} samples/s,"
                f" {row['cpu_cores_busy'] or float('nan'):.1f} CPU cores busy",
                flush=True,
            )
    best = max(
        (r for r in report["routes"] if "samples_per_s" in r),
        key=lambda r: r["samples_per_s"],
        default=None,
    )
    if best and peak:
        # H100 and H200 share the dense bf16 peak; H200's memory is 1.43x faster. So the H100 time
        # lies between the compute-bound scaling (peak ratio) and the memory-bound one (bandwidth
        # ratio).
        hours = PROJECTED_SAMPLES / best["samples_per_s"] / 3600
        low, high = hours * peak / H100[0], hours * max(peak / H100[0], bandwidth / H100[1])
        report["projected_h100_hours_500M"] = {"route": best["name"], "low": low, "high": high}
        print(
            f"  projected H100-hours for 500M samples ({best['name']}): {low:.0f}-{high:.0f}",
            flush=True,
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--out", type=Path, default=None, help="work folder (default: a temp folder)"
    )
    parser.add_argument(
        "--threads", default="1", help="OMP_NUM_THREADS for both trainers ('' = unset)"
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=["trainer", "loader", "gpu"])
    parser.add_argument(
        "--budget-s",
        type=float,
        default=480.0,
        help="GPU part: start no further route or data-path run after this many seconds",
    )
    parser.add_argument(
        "--gpu-json", type=Path, default=None, help="GPU figures (default: WORK/gpu.json)"
    )
    parser.add_argument(
        "--gpu-device",
        default="cuda",
        help="'cpu' runs the GPU part's code at toy sizes (a smoke test of the script)",
    )
    parser.add_argument("--gpu-model", default="ViT-B-16")
    parser.add_argument("--gpu-batch", type=int, default=512)
    parser.add_argument("--gpu-steps", type=int, default=30)
    parser.add_argument("--e2e-steps", type=int, default=20)
    parser.add_argument(
        "--e2e-workers", type=int, default=8, help="data workers (CPU cores) of the end-to-end runs"
    )
    parser.add_argument(
        "--routes",
        nargs="*",
        default=None,
        choices=[r["name"] for r in ROUTES],
        help="only these routes (default: all)",
    )
    parser.add_argument(
        "--e2e-route",
        default="compile-all",
        choices=[r["name"] for r in ROUTES],
        help="the route whose trainer runs the end-to-end (JPEG shards) measurements",
    )
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="biocap-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"work folder: {root}; {os.cpu_count()} CPU(s)", flush=True)
    if "trainer" not in args.skip:
        trainer_comparison(root, args.repeats, args.threads or None)
    if "loader" not in args.skip:
        loader_comparison(root)
    if "gpu" not in args.skip:
        import torch

        if args.gpu_device.startswith("cuda") and not torch.cuda.is_available():
            print(
                "GPU: no CUDA device here; the ViT-B-16 routes, MFU and data-path figures need one"
            )
            return
        print(f"GPU part ({args.gpu_device}, budget {args.budget_s:.0f} s):", flush=True)
        report = gpu_benchmark(
            root,
            Budget(args.budget_s),
            args.gpu_device,
            args.gpu_model,
            args.gpu_batch,
            args.gpu_steps,
            e2e_steps=args.e2e_steps,
            workers=args.e2e_workers,
            only=args.routes,
            e2e_route=args.e2e_route,
        )
        out = args.gpu_json or root / "gpu.json"
        out.write_text(json.dumps(report, indent=1))
        print(f"GPU figures: {out}")


if __name__ == "__main__":
    main()
