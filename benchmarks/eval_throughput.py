"""biocap-eval image throughput: end to end (JPEG files -> decode -> preprocess -> model) against
the model alone.

The model-alone figure runs ``encode_image`` on one already preprocessed batch, on
the device, over and over; the end-to-end figure is biocap-eval's own encoding path
(``Encoder.image_files``: DataLoader workers, biocap-core's decode and eval transform,
host-to-device copy, the same model call), cache off. A ratio near 1 means the data
path is not the bottleneck (goal: >= 0.9).

    uv run python benchmarks/eval_throughput.py       # ViT-B-16, random weights, CPU
    uv run python benchmarks/eval_throughput.py --device cuda --images 4096 --batch-size 256 \
        --workers 8
    uv run python benchmarks/eval_throughput.py --device cuda --images 4096 --batch-size 256 \
        --workers 8 --gpu-decode

``--gpu-decode``: the same ``Encoder`` with biocap-eval's ``--gpu-decode``: the workers only read
the files and the device decodes, resizes and normalises each batch (biocap-core's ``gpu_decode``).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch

from biocap_core.checkpoints import load_model
from biocap_core.gpu_decode import require_cuda
from biocap_core.precision import autocast
from biocap_core.preprocess import decode_image, image_transform
from biocap_core.runtime import default_device, default_precision
from biocap_core.toy import BACKGROUNDS, TILTS, make_species, render
from biocap_eval.embedding import Encoder


def write_photos(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    """``n`` camera-sized JPEGs (toy organisms rendered and resized to ``size``), like benchmark
    images."""
    species = make_species(16)
    distinct = []
    for i in range(min(n, 32)):
        rng = random.Random(i)
        img = render(
            species[i % len(species)], rng, 256, rng.choice(list(BACKGROUNDS)), rng.choice(TILTS)
        )
        distinct.append(img.resize(size))
    paths = []
    for i in range(n):
        path = folder / f"{i:06d}.jpg"
        distinct[i % len(distinct)].save(path, quality=90)
        paths.append(path)
    return paths


def sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--photo-size", type=int, nargs=2, default=(500, 375), metavar=("W", "H"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--device", default=default_device())
    parser.add_argument("--precision", default=None)
    parser.add_argument(
        "--gpu-decode", action="store_true", help="end to end with JPEG decoding on the device"
    )
    args = parser.parse_args()
    if args.gpu_decode:
        require_cuda(args.device)
    precision = args.precision or default_precision(args.device)
    model = load_model(args.model, args.pretrained, device=args.device, precision=precision).eval()
    enc = Encoder(
        model,
        device=args.device,
        precision=precision,
        batch_size=args.batch_size,
        workers=args.workers,
        gpu_decode=args.gpu_decode,
    )

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_photos(Path(tmp), args.images, tuple(args.photo_size))
        transform = image_transform(model, train=False)
        batch = torch.stack([transform(decode_image(p)) for p in paths[: args.batch_size]]).to(
            args.device
        )
        enc.image_files(
            paths[: args.batch_size]
        )  # warm-up: lazy init, kernels (nvJPEG's too), worker start

        steps = max(1, args.images // args.batch_size)
        sync(args.device)
        start = time.perf_counter()
        with torch.no_grad():
            for _ in range(steps):
                with autocast(args.device, precision):
                    model.encode_image(batch, normalize=True).float()
        sync(args.device)
        forward = steps * args.batch_size / (time.perf_counter() - start)

        start = time.perf_counter()
        result = enc.image_files(paths)
        sync(args.device)
        assert not result.unreadable
        feats = result.vectors
        end_to_end = len(paths) / (time.perf_counter() - start)

    assert feats.shape[0] == len(paths)
    print(
        f"model {args.model} on {args.device} ({precision}), {torch.get_num_threads()} torch"
        f" threads, batch {args.batch_size}, {args.workers} workers, {args.images} JPEGs of"
        f" {args.photo_size[0]}x{args.photo_size[1]}, {'device' if args.gpu_decode else 'CPU'}"
        " decode"
    )
    print(f"model forward only : {forward:8.1f} images/s")
    print(f"end to end         : {end_to_end:8.1f} images/s")
    print(f"ratio              : {end_to_end / forward:8.3f}  (goal >= 0.9)")


if __name__ == "__main__":
    main()
