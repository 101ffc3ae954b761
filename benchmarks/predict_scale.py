"""biocap-predict over large collections: memory, jobs side by side, resume (printed figures).

1. Memory: peak RSS (``VmHWM``) of ``predict --from-list`` over 1,000,000 against 10,000 list
   entries, each in a fresh process, output written in parts and joined into one parquet file. The
   model call is stubbed at the edge (``Predictor._encode`` hands out random unit embeddings for
   the names, a batch at a time, without reading files: a million photos cannot be decoded on a
   laptop), so listing, scoring, rows, parts, the state file and the join are the real ones.
   Goal: within 100 MB.
2. Jobs: ``predict`` on one job with every core against ``--num-shards 2`` (two processes side by
   side, the cores split between them), real images and model (random weights); images/s from
   the first part's start to the last part's end, as each job's ``--log`` records them (start-up,
   tens of seconds on a busy laptop, left out). Goal: two jobs' total >= 0.9 of one job's.
3. Resume: a run killed (SIGKILL) once half its parts are recorded, then rerun with the same
   command, against the same run uninterrupted. Printed twice: processing time (from the first
   part's start, to the kill and over the rerun's parts: what the kill loses) and the whole
   commands' wall time (which adds the rerun's start-up). Goal: >= 0.95.

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


def run_jobs(args, folder: Path, tmp: Path, jobs: int) -> tuple[float, float]:
    """(images/s, seconds) of ``jobs`` concurrent processes sharing ``folder`` (cores split
    evenly), from the first job's first part to the last job's last part."""
    out = tmp / f"jobs-{jobs}.parquet"
    logs = [tmp / f"jobs-{jobs}-{i}.json" for i in range(jobs)]
    threads = max(1, args.threads // jobs)
    procs = [
        subprocess.Popen(
            cli(
                args,
                folder,
                out,
                "--log",
                str(log),
                "--num-shards",
                str(jobs),
                "--shard-index",
                str(i),
                "--part-size",
                str(max(1, args.images // jobs // 4)),
            ),
            env=env_with_threads(threads),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for i, log in enumerate(logs)
    ]
    for proc in procs:
        if proc.wait():
            sys.exit(f"a job failed:\n{proc.stderr.read().decode()[-3000:]}")
    runs = [json.loads(log.read_text())["processed"] for log in logs]
    seconds = max(r["finished"] for r in runs) - min(r["started"] for r in runs)
    if jobs > 1:
        merge = [str(Path(sys.executable).with_name("biocap-predict")), "merge", str(out)]
        subprocess.run(merge, check=True, capture_output=True)
    return sum(r["inputs"] for r in runs) / seconds, seconds


def resume(args, folder: Path, tmp: Path, n: int) -> dict[str, float]:
    """Processing and wall seconds of the run uninterrupted, and killed then resumed."""
    part = str(max(1, n // 8))
    env = env_with_threads(args.threads)
    log = tmp / "whole.json"
    start = time.perf_counter()
    cmd = cli(args, folder, tmp / "whole.parquet", "--part-size", part, "--log", str(log))
    subprocess.run(cmd, env=env, check=True)
    figures = {"wall": time.perf_counter() - start, "done": 0}
    whole = json.loads(log.read_text())["processed"]
    figures["processing"] = whole["finished"] - whole["started"]

    out = tmp / "resumed.parquet"
    state = Path(f"{out}.parts") / "job-00000-of-00001.json"
    cmd = cli(args, folder, out, "--part-size", part, "--log", str(log))
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    while not (state.exists() and len(json.loads(state.read_text())["parts"]) >= 4):
        if proc.poll() is not None:
            sys.exit("the run finished before it could be killed; give more --images")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    killed_at = time.time()
    proc.wait()
    parts = json.loads(state.read_text())["parts"]
    subprocess.run(cmd, env=env, check=True)
    figures["resumed_wall"] = time.perf_counter() - start
    rerun = json.loads(log.read_text())["processed"]
    figures["resumed_processing"] = (killed_at - parts[0]["started"]) + (
        rerun["finished"] - rerun["started"]
    )
    figures["done"] = sum(p["inputs"] for p in parts)
    return figures


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
        if 2 in parts:
            one, one_s = run_jobs(args, folder, tmp, 1)
            two, two_s = run_jobs(args, folder, tmp, 2)
            print(
                f"{args.images} images: 1 job of {args.threads} thread(s) {one:.0f} images/s "
                f"({one_s:.1f} s); 2 jobs of {max(1, args.threads // 2)} {two:.0f} images/s "
                f"({two_s:.1f} s): {two / one:.2f}"
            )
        if 3 in parts:
            f = resume(args, folder, tmp, args.images)
            print(
                f"{args.images} images, killed after {f['done']}: processing "
                f"{f['processing']:.1f} s uninterrupted vs {f['resumed_processing']:.1f} s killed "
                f"+ resumed: {f['processing'] / f['resumed_processing']:.2f}; whole commands "
                f"{f['wall']:.1f} s vs {f['resumed_wall']:.1f} s: "
                f"{f['wall'] / f['resumed_wall']:.2f}"
            )


if __name__ == "__main__":
    main()
