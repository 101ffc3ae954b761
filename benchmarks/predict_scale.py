"""biocap-predict over large collections: memory, jobs side by side, resume (printed figures).

1. Memory: peak RSS (``VmHWM``) of ``predict --from-list`` over 1,000,000 against 10,000 list
   entries, each in a fresh process, output written in parts and joined into one parquet file. The
   model call is stubbed at the edge (``Predictor._encode`` hands out random unit embeddings for
   the names, a batch at a time, without reading files: a million photos cannot be decoded on a
   laptop), so listing, scoring, rows, parts, the state file and the join are the real ones.
   Goal: within 100 MB.
2. Jobs: ``predict`` on one job with every core against ``--num-shards 2`` (two processes side by
   side, the cores split between them), real images and model; images/s without start-up (a
   64-image run of each kind subtracted). Goal: two jobs' total >= 0.9 of one job's.
3. Resume: a run killed (SIGKILL) once half its parts are recorded, then rerun with the same
   command, against the same run uninterrupted; wall time of the whole commands. Goal: >= 0.95.

    uv run python benchmarks/predict_scale.py                    # CPU, all three, a few minutes
    uv run python benchmarks/predict_scale.py --parts 1          # only memory
    uv run python benchmarks/predict_scale.py --parts 2,3 --device cuda --model ViT-B-16 \\
        --images 20000 --batch-size 256 --workers 8
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LABELS = "red crawler,blue sprout,green cap"

#: A fresh process running ``predict`` with the model call stubbed (see part 1), printing its peak
#: RSS.
STUB_RUN = """
import sys, torch
from biocap_predict.predictor import Predictor
from biocap_predict.runs import Inputs, ModelOptions, PredictRequest, predict
from biocap_predict.parts import Job

def encode(self, images, heads, on_skip, normalize=True, callback=None):
    names, dim = list(images), self.label_embeddings(["probe"]).shape[1]
    for start in range(0, len(names), self.batch_size):
        batch = names[start:start + self.batch_size]
        feats = torch.nn.functional.normalize(torch.randn(len(batch), dim), dim=-1)
        if callback:
            callback(start + len(batch), len(names))
        yield batch, {h: feats for h in heads}

Predictor._encode = encode
listing, out, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
summary = predict(
    ModelOptions("BioCAP-toy", device="cpu", batch_size=batch, progress=False),
    Inputs(from_list=listing),
    PredictRequest(labels=LABELS, k=5, fmt="parquet", output=out),
    job=Job(part_images=10_000),
    echo=lambda m: None,
)
rss = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print("RSS", rss, summary.merged["images"])
""".replace("LABELS", repr(LABELS))


def memory(n: int, batch: int, tmp: Path) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of the stubbed run over ``n`` list entries."""
    listing = tmp / f"list-{n}.txt"
    with open(listing, "w") as fh:
        for i in range(n):
            fh.write(f"/collection/camera{i % 50:02d}/IMG_{i:07d}.jpg\n")
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", STUB_RUN, str(listing), str(tmp / f"out-{n}.parquet"), str(batch)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        sys.exit(f"memory run over {n} failed:\n{done.stderr[-3000:]}")
    _, kb, images = done.stdout.split()[-3:]
    assert int(images) == n, (images, n)
    return int(kb) / 1024, time.perf_counter() - start


def cli(args: argparse.Namespace, folder: Path, out: Path, *extra: str) -> list[str]:
    return [
        str(Path(sys.executable).with_name("biocap-predict")),
        "predict", str(folder), "--labels", LABELS, "--k", "5", "--model", args.model,
        "--device", args.device, "--batch-size", str(args.batch_size), "--workers",
        str(args.workers), "--quiet", "--format", "parquet", "--output", str(out), *extra,
    ]  # fmt: skip


def env_with_threads(threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def timed_jobs(args, folder: Path, tmp: Path, jobs: int) -> float:
    """Wall seconds of ``jobs`` concurrent processes sharing ``folder`` (cores split evenly)."""
    out = tmp / f"jobs-{jobs}-{folder.name}.parquet"
    threads = max(1, args.threads // jobs)
    start = time.perf_counter()
    shard = (lambda i: ["--num-shards", str(jobs), "--shard-index", str(i)]) if jobs > 1 else None
    procs = [
        subprocess.Popen(
            cli(args, folder, out, *(shard(i) if shard else [])),
            env=env_with_threads(threads),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in range(jobs)
    ]
    for proc in procs:
        if proc.wait():
            sys.exit(f"a job failed:\n{proc.stderr.read().decode()[-3000:]}")
    wall = time.perf_counter() - start
    if jobs > 1:
        subprocess.run(
            [str(Path(sys.executable).with_name("biocap-predict")), "merge", str(out)], check=True
        )
    return wall


def resume(args, folder: Path, tmp: Path, n: int) -> tuple[float, float, int]:
    """(uninterrupted seconds, killed + resumed seconds, inputs done when killed)."""
    part = str(max(1, n // 8))
    env = env_with_threads(args.threads)
    whole = tmp / "whole.parquet"
    start = time.perf_counter()
    subprocess.run(cli(args, folder, whole, "--part-size", part), env=env, check=True)
    uninterrupted = time.perf_counter() - start

    out = tmp / "resumed.parquet"
    state = Path(f"{out}.parts") / "job-00000-of-00001.json"
    cmd = cli(args, folder, out, "--part-size", part)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    while not (state.exists() and len(json.loads(state.read_text())["parts"]) >= 4):
        if proc.poll() is not None:
            sys.exit("the run finished before it could be killed; give more --images")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sum(p["inputs"] for p in json.loads(state.read_text())["parts"])
    subprocess.run(cmd, env=env, check=True)
    return uninterrupted, time.perf_counter() - start, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="1,2,3")
    parser.add_argument("--small", type=int, default=10_000, help="part 1's small list")
    parser.add_argument("--large", type=int, default=1_000_000, help="part 1's large list")
    parser.add_argument("--images", type=int, default=4000, help="parts 2 and 3: photos")
    parser.add_argument("--model", default="BioCAP-toy", help="random weights: speed only")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="one job's threads")
    args = parser.parse_args()
    parts = {int(p) for p in args.parts.split(",")}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if 1 in parts:
            small, small_s = memory(args.small, args.batch_size, tmp)
            large, large_s = memory(args.large, args.batch_size, tmp)
            print(
                f"peak RSS, stubbed model, {args.small:,} vs {args.large:,} list entries: "
                f"{small:.1f} vs {large:.1f} MB: {large - small:+.1f} MB "
                f"({small_s:.0f} s and {large_s:.0f} s)"
            )
        if parts & {2, 3}:
            sys.path.insert(0, str(HERE))
            from predict_throughput import write_photos

            folder = tmp / "photos"
            write_photos(folder, args.images, (64, 64))
            warm = tmp / "warm"
            write_photos(warm, 64, (64, 64))
        if 2 in parts:
            rates = {}
            for jobs in (1, 2):
                startup = timed_jobs(args, warm, tmp, jobs)
                wall = timed_jobs(args, folder, tmp, jobs)
                rates[jobs] = (args.images - 64) / (wall - startup)
                print(
                    f"{jobs} job(s) of {max(1, args.threads // jobs)} thread(s): {wall:.1f} s "
                    f"({startup:.1f} s for 64 images): {rates[jobs]:.0f} images/s"
                )
            print(f"two jobs / one job, images/s: {rates[2] / rates[1]:.2f}")
        if 3 in parts:
            whole, resumed, done = resume(args, folder, tmp, args.images)
            print(
                f"uninterrupted {whole:.1f} s, killed after {done} of {args.images} images and "
                f"resumed {resumed:.1f} s (both processes): {whole / resumed:.2f}"
            )


if __name__ == "__main__":
    main()
