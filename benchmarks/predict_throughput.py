"""biocap-predict: speed and memory of ``predict --index`` (printed figures, not timed tests).

1. Data path: end-to-end ``predict --index`` (files -> DataLoader workers -> decode -> preprocess ->
   model -> scores at the requested rank -> CSV) against the model's forward pass alone: the same
   call predict makes (``encode_image_heads``, tax head, normalised, same precision) on the same
   images, preprocessed beforehand, in batches of the same size, with the same number of torch
   threads (``--threads``, set for the whole process). The end-to-end figure also has the data
   path's own processes and threads (decoding workers, output writer) beside the model's threads;
   that is the point of measuring it. Goal: ratio >= 0.9.
2. Memory: peak RSS of the same run over 1,000 and 10,000 images, each in a fresh process.
   Goal: within 50 MB of each other (rows are streamed out per batch).
3. Index size: predictions (every rank in one pass) with an index of 450,000 species against one of
   1,000 (random unit vectors, random 7-rank names), on the same images. Goal: >= 0.8 of the speed.

    uv run python benchmarks/predict_throughput.py           # CPU, 1 torch thread, a few minutes
    uv run python benchmarks/predict_throughput.py --parts 1 # only the data path, a minute
    uv run python benchmarks/predict_throughput.py --parts 2 # only memory
    uv run python benchmarks/predict_throughput.py --device cuda --images 20000 --batch-size 256 \
        --workers 8
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from biocap_core import schemas
from biocap_core.checkpoints import load_model, save_weights
from biocap_core.precision import autocast
from biocap_core.preprocess import decode_image, image_transform
from biocap_core.runtime import default_precision, resolve_device
from biocap_core.toy import BACKGROUNDS, TILTS, make_species, render
from biocap_predict.index import FORMAT, TaxaIndex, weights_fingerprint
from biocap_predict.predictor import Predictor
from biocap_predict.runs import Inputs, ModelOptions, PredictRequest, predict


def write_photos(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    """``n`` JPEGs of toy organisms at ``size`` (32 distinct images, copied)."""
    folder.mkdir(parents=True, exist_ok=True)
    species = make_species(16)
    distinct = []
    for i in range(32):
        rng = random.Random(i)
        img = render(
            species[i % 16], rng, 128, rng.choice(list(BACKGROUNDS)), rng.choice(TILTS)
        ).resize(size)
        path = folder / f"distinct-{i}.jpg"
        img.save(path, quality=90)
        distinct.append(path.read_bytes())
        path.unlink()
    paths = []
    for i in range(n):
        path = folder / f"{i:06d}.jpg"
        path.write_bytes(distinct[i % 32])
        paths.append(path)
    return paths


def random_index(n: int, dim: int, fingerprint: str, seed: int = 0) -> TaxaIndex:
    """``n`` species with random unit text vectors in a regular tree (20 species a genus, 5 genera a
    family, 4 families an order, 7 orders a class, 5 classes a phylum, 12 phyla a kingdom)."""
    fan_in = {"genus": 20, "family": 5, "order": 4, "class": 7, "phylum": 5, "kingdom": 12}
    ids, columns = np.arange(n), {}
    for rank in ("genus", "family", "order", "class", "phylum", "kingdom"):
        ids = ids // fan_in[rank]
        columns[rank] = [f"{rank}{i}" for i in ids]
    columns["species"] = [f"sp{i}" for i in range(n)]
    columns["common_name"] = [""] * n
    taxa = pl.DataFrame({c: columns[c] for c in schemas.TAXA.column_names})
    rng = np.random.default_rng(seed)
    emb = torch.nn.functional.normalize(
        torch.from_numpy(rng.standard_normal((n, dim), dtype=np.float32)), dim=-1
    )
    return TaxaIndex(
        taxa,
        emb,
        {"format": FORMAT, "model_fingerprint": fingerprint, "model": "benchmark", "captions": 0},
    )


def model_alone(
    model, paths: list[Path], batch: int, device: str, precision: str
) -> tuple[float, float]:
    """Images/s of the model call predict makes, on every image of ``paths`` (preprocessed
    beforehand, on the device), in batches of ``batch``, after one warm-up batch; and the CPU
    seconds it took.
    """
    transform = image_transform(model, train=False)
    images = torch.stack([transform(decode_image(p)) for p in paths]).to(device)
    batches = images.split(batch)
    with torch.no_grad(), autocast(device, precision):
        model.encode_image_heads(batches[0], ("tax",), normalize=True)
        start, cpu = time.perf_counter(), time.process_time()
        for x in batches:
            model.encode_image_heads(x, ("tax",), normalize=True)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
    return len(paths) / (time.perf_counter() - start), time.process_time() - cpu


def end_to_end(
    options: ModelOptions, folder: Path, index: Path, out: Path, rank: str
) -> tuple[float, int, float]:
    """(images/s, images, CPU seconds of this process, not counting the decoding workers)."""
    start, cpu = time.perf_counter(), time.process_time()
    summary = predict(
        options,
        Inputs([str(folder)]),
        PredictRequest(index=str(index), rank=rank, output=str(out)),
        echo=lambda m: None,
    )
    return summary.images / (time.perf_counter() - start), summary.images, time.process_time() - cpu


def peak_rss_mb(args: argparse.Namespace, folder: Path, index: Path, out: Path) -> float:
    """Peak RSS (MB) of a fresh process predicting every image of ``folder``: its own high-water
    mark (``VmHWM``), not ``ru_maxrss``, which Linux carries across exec from the process it was
    forked from (here this benchmark, holding the preprocessed images of part 1)."""
    code = (
        "import atexit, sys; from biocap_predict.cli import app; sys.argv = ['biocap-predict'] +"
        " sys.argv[1:]; atexit.register(lambda: print('RSS', next(line.split()[1] for line in"
        " open('/proc/self/status') if line.startswith('VmHWM:')))); app()"
    )
    cmd = [
        sys.executable,
        "-c",
        code,
        "predict",
        str(folder),
        "--index",
        str(index),
        "--model",
        args.model,
        "--pretrained",
        args.weights,
        "--device",
        args.device,
        "--batch-size",
        str(args.batch_size),
        "--workers",
        str(args.workers),
        "--rank",
        "all",
        "--output",
        str(out),
        "--quiet",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    line = [x for x in (done.stdout + done.stderr).splitlines() if x.startswith("RSS")]
    if done.returncode != 0 and not line:
        raise RuntimeError(done.stderr[-2000:])
    return int(line[-1].split()[1]) / 1024


def index_speed(
    args: argparse.Namespace, paths: list[Path], sizes=(1_000, 450_000)
) -> dict[int, float]:
    """Images/s of Predictor.predict(rank='all') with random indexes of each size, same images and
    model."""
    device = resolve_device(args.device)
    model = load_model(args.big_model, None, device=device, precision=default_precision(device))
    fingerprint = weights_fingerprint(model)
    dim = model.visual.proj.shape[1]
    rates = {}
    for n in sizes:
        predictor = Predictor(
            model,
            random_index(n, dim, fingerprint),
            device=device,
            batch_size=args.batch_size,
            workers=args.workers,
        )
        predictor.predict(
            paths[: args.batch_size], rank="all"
        )  # warm-up: groups, text matrix on the device
        start = time.perf_counter()
        rows = sum(len(r) for r in predictor.iter_predict(paths[: args.index_images], rank="all"))
        rates[n] = args.index_images / (time.perf_counter() - start)
        print(f"  index of {n:>7,} species: {rates[n]:8.1f} images/s ({rows} rows)")
        del predictor
    return rates


def data_path(
    args: argparse.Namespace, model, device: str, precision: str, tmp: Path, paths: list[Path]
) -> None:
    """Part 1: end to end against the forward pass alone, ``--repeats`` times, each run printed."""
    print(
        f"1. data path: {args.images} JPEGs {args.photo_size[0]}x{args.photo_size[1]},"
        f" {args.model}, {device}, batch {args.batch_size}, {args.workers} worker(s),"
        f" {torch.get_num_threads()} torch thread(s), 1,000 species, rank species"
    )
    options = ModelOptions(
        args.model, args.weights, device, precision, args.batch_size, args.workers, progress=False
    )
    few = write_photos(tmp / "few", args.images // 10, tuple(args.photo_size))
    end_to_end(
        options, few[0].parent, tmp / "index", tmp / "few.csv", "species"
    )  # warm-up: lazy imports
    ratios = []
    for run in range(args.repeats):  # interleaved, so that both figures see the machine alike
        alone, cpu_alone = model_alone(model, paths, args.batch_size, device, precision)
        e2e, n, cpu_n = end_to_end(
            options, tmp / "photos", tmp / "index", tmp / "out.csv", "species"
        )
        e2e_few, n_few, cpu_few = end_to_end(
            options, few[0].parent, tmp / "index", tmp / "few.csv", "species"
        )
        steady = (n - n_few) / (n / e2e - n_few / e2e_few)
        ratios.append(steady / alone)
        print(
            f"  run {run + 1}: model alone {alone:7.1f} images/s; end to end {e2e:7.1f} images/s"
            f" ({n} images, ratio {e2e / alone:.2f} with start-up); without start-up (model and"
            f" index load) {steady:7.1f} images/s: ratio {steady / alone:.2f}"
        )
        # CPU time is less swayed by other jobs than wall time: what the main process spends per
        # image end to end (beside the decoding workers) against the forward pass alone
        print(
            "         main-process CPU per 1,000 images: end to end without start-up "
            f"{1000 * (cpu_n - cpu_few) / (n - n_few):.3f} s, forward alone "
            f"{1000 * cpu_alone / len(paths):.3f} s"
        )
    print(
        f"  ratio without start-up, runs: {', '.join(f'{r:.2f}' for r in ratios)}; median "
        f"{sorted(ratios)[len(ratios) // 2]:.2f} (goal >= 0.9)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="BioCAP-toy")
    parser.add_argument(
        "--big-model",
        default="ViT-B-16",
        help=(
            "Model of the index-size comparison (BioCAP's "
            "architecture: the index's cost only matters relative to a real model's forward pass)."
        ),
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--images",
        type=int,
        default=6000,
        help=(
            "JPEGs of the data-path measurement (6,000: "
            "with 2,000, taking the start-up out swung the ratio by +-0.07 on the 2-core machine)"
        ),
    )
    parser.add_argument("--index-images", type=int, default=64)
    parser.add_argument(
        "--photo-size",
        type=int,
        nargs=2,
        default=(64, 64),
        metavar=("W", "H"),
        help="JPEG size (default: the toy tree of life's own images)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--parts", default="1,2,3", help="Which measurements to run, e.g. 1,3.")
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="Data-path measurements (each: forward alone, then end to end), all printed",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help=(
            "torch threads, for the forward pass alone and "
            "end to end alike (1 on the 2-core development machine: the other core decodes)"
        ),
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    precision = default_precision(device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = load_model(args.model, None, device=device, precision=precision)
        args.weights = str(
            save_weights(model, tmp / "weights.safetensors")
        )  # random, the same in every process
        random_index(1000, model.visual.proj.shape[1], weights_fingerprint(model)).save(
            tmp / "index"
        )
        paths = write_photos(tmp / "photos", args.images, tuple(args.photo_size))
        if "1" in args.parts:
            data_path(args, model, device, precision, tmp, paths)
        if "2" in args.parts:
            print("2. memory: peak RSS of `biocap-predict predict --rank all`, fresh process each")
            rss = {}
            for count in (1_000, 10_000):
                folder = tmp / f"mem{count}"
                write_photos(folder, count, tuple(args.photo_size))
                rss[count] = peak_rss_mb(args, folder, tmp / "index", tmp / f"mem{count}.csv")
                print(f"  {count:>6,} images: peak RSS {rss[count]:7.1f} MB")
            print(f"  difference {rss[10_000] - rss[1_000]:+.1f} MB (goal within 50 MB)")
        if "3" not in args.parts:
            return
        print(f"3. index size: {args.big_model}, {args.index_images} images, rank all, k 5")
        rates = index_speed(args, paths)
        print(f"  450,000 / 1,000 species speed: {rates[450_000] / rates[1_000]:.2f} (goal >= 0.8)")


if __name__ == "__main__":
    main()
