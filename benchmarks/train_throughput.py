"""Training throughput of biocap-train against OpenCLIP's own trainer, and JPEG draft decoding.

    uv run --group bench python benchmarks/train_throughput.py [--repeats 3] [--out DIR]

1. Trainer: the same tiny model (BioCAP-toy), the same toy shards, one fixed text type
   (taxon_com; OpenCLIP reads it from a ``txt`` member the script adds), the same batch size,
   workers, precision and threads. Each trainer runs as one process invocation per repeat,
   alternating; samples/s is the median of each run's logged intervals after the first
   (warm-up). Prints both figures and ours/OpenCLIP.
2. Loader: samples/s of biocap-train's data stream on TreeOfLife-size JPEGs (toy images
   rendered at 512 and 1024 px) with and without PIL draft decoding, for a 224 px crop.
3. On a CUDA machine: ViT-B-16, one GPU, synthetic batches, bf16 autocast and pure bf16, eager
   and torch.compile: samples/s and model FLOPs utilisation (FLOPs counted by
   torch.utils.flop_counter for one step; writes gpu.json in the work folder).

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
                for s in iter_samples(str(shard), require=()):
                    sample = {k: v for k, v in s.items() if not k.startswith("__") or k == "__key__"}
                    sample["txt"] = sample[f"{TEXT_TYPE}.txt"]
                    sink.write(sample)
        sizes[shard.name] = json.loads((toy / "train" / "sizes.json").read_text())[shard.name]
    (out / "sizes.json").write_text(json.dumps(sizes))
    return str(out / f"shard-{{000000..{len(sizes) - 1:06d}}}.tar")


def run_ours(shards: str, logs: Path, name: str, env: dict) -> float:
    cmd = [sys.executable, "-m", "biocap_train", "--train-data", shards, "--model", "BioCAP-toy",
           "--text-type", TEXT_TYPE, "--batch-size", str(BATCH), "--workers", str(WORKERS), "--precision",
           PRECISION, "--epochs", "1", "--train-num-samples", str(SAMPLES), "--lr", "1e-3", "--warmup", "10",
           "--logs", str(logs), "--name", name, "--log-every-n-steps", "4", "--save-frequency", "0",
           "--device", "cpu", "--no-progress"]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    rates = [json.loads(line)["samples_per_s"] for line in (logs / name / "metrics.jsonl").read_text().splitlines()
             if '"kind": "train"' in line]
    return statistics.median(rates[1:])


_OPEN_CLIP_MAIN = (
    "import sys, open_clip, biocap_core.model;"
    "open_clip.add_model_config(biocap_core.model.MODEL_CONFIG_DIR);"
    "from open_clip_train.main import main; main(sys.argv[1:])"
)


def run_open_clip(shards: str, logs: Path, name: str, env: dict) -> float:
    cmd = [sys.executable, "-c", _OPEN_CLIP_MAIN, "--train-data", shards, "--dataset-type", "webdataset",
           "--model", "BioCAP-toy", "--batch-size", str(BATCH), "--workers", str(WORKERS), "--precision", PRECISION,
           "--epochs", "1", "--train-num-samples", str(SAMPLES), "--lr", "1e-3", "--warmup", "10", "--logs",
           str(logs), "--name", name, "--log-every-n-steps", "4", "--save-frequency", "0", "--device", "cpu"]
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
        theirs.append(run_open_clip(shards, root / "logs", f"openclip-{threads}-{i}-{time.time_ns()}", env))
        print(f"  repeat {i + 1}: biocap-train {ours[-1]:7.1f} samples/s   OpenCLIP {theirs[-1]:7.1f} samples/s",
              flush=True)
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"trainer (BioCAP-toy, batch {BATCH}, {WORKERS} worker, {PRECISION}, OMP_NUM_THREADS={threads or 'unset'}, "
          f"CPU): biocap-train {a:.1f} samples/s, OpenCLIP {b:.1f} samples/s, ratio {a / b:.2f}x")


def loader_comparison(root: Path, sizes=(512, 1024), n_images=128) -> None:
    import open_clip
    import torch
    from biocap_core.preprocess import image_transform
    from biocap_core.shards import expand_sources
    from biocap_core.toy import ToyConfig, generate
    from biocap_train.data import StreamSpec, TrainStream, loader

    torch.set_num_threads(1)  # as inside a DataLoader worker
    tokenizer = open_clip.SimpleTokenizer(context_length=77)
    transform = image_transform(224, train=True)
    for size in sizes:
        toy = root / f"toy-{size}px"
        if not (toy / "manifest.json").is_file():
            generate(toy, ToyConfig(species=16, images_per_species=n_images // 16, val_per_species=1,
                                    eval_per_species=1, inquire_queries=2, inquire_candidates=4,
                                    image_size=size, shard_size=64))
        urls, _ = expand_sources("::".join(str(p) for p in sorted((toy / "train").glob("shard-*.tar"))))
        rates = {}
        for draft in (None, 224):
            spec = StreamSpec(urls=urls, weights=None, resampled=False, batch_size=32, seed=0, epoch=0, rank=0,
                              world_size=1, num_streams=1, microbatches=2 * n_images // 32, first_step=0,
                              accum_freq=1, transform=transform, tokenizer=tokenizer, text_type=TEXT_TYPE,
                              draft_size=draft, shuffle_buffer=64)
            best = 0.0
            for _ in range(3):
                start, n = time.perf_counter(), 0
                for batch in loader(TrainStream(spec), 0):
                    n += len(batch["image"])
                best = max(best, n / (time.perf_counter() - start))
            rates[draft] = best
        print(f"loader, {size} px JPEGs -> 224 px crop, 1 process: full decode {rates[None]:.1f} samples/s, "
              f"draft decode {rates[224]:.1f} samples/s ({rates[224] / rates[None]:.2f}x)", flush=True)


# dense bf16 peaks from the datasheets; the first name contained in the device's name wins
GPU_PEAK_BF16 = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
# (batch, precision, torchcompile): eager first, so a figure is printed before any compile starts
GPU_CONFIGS = [(256, "amp_bf16", False), (512, "amp_bf16", False), (512, "amp_bf16", True),
               (512, "bf16", True)]


def gpu_benchmark(device: str = "cuda", model: str = "ViT-B-16", configs=GPU_CONFIGS, steps: int = 30,
                  warmup: int = 5, budget_s: float = 420.0) -> list[dict]:
    """Samples/s and MFU of :meth:`Trainer.train_step` on synthetic batches, one line per config.

    FLOPs are counted eagerly, per batch size, by torch.utils.flop_counter over a whole step
    (forward and backward; attention included) and reused for the compiled runs, which do the
    same arithmetic. Configs that would start after ``budget_s`` are skipped, so a lease is
    never overrun by a slow compile."""
    import torch
    from biocap_train import TrainConfig
    from biocap_train.distributed import DistInfo
    from biocap_train.trainer import Trainer
    from torch.utils.flop_counter import FlopCounterMode

    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    peak = next((v for k, v in GPU_PEAK_BF16.items() if k in name), None)

    def setup(batch: int, precision: str, compiled: bool) -> tuple[Trainer, list[dict]]:
        torch._dynamo.reset()
        cfg = TrainConfig(model=model, precision=precision, text_type=TEXT_TYPE, lr=1e-4, warmup=10,
                          progress=False, grad_checkpointing=False, torchcompile=compiled)
        trainer = Trainer(cfg, DistInfo(device=dev), total_steps=steps + warmup + 1)
        ctx, size = trainer.model.context_length, trainer.model.visual.image_size
        return trainer, [{"image": torch.randn(batch, 3, *size, device=dev),
                          "text": torch.randint(1, trainer.model.vocab_size - 1, (batch, ctx), device=dev),
                          "text_type": TEXT_TYPE}]

    began, flops, results = time.perf_counter(), {}, []
    for batch, precision, compiled in configs:
        label = f"{model}, {precision}{' + torch.compile' if compiled else ''}, batch {batch}"
        if time.perf_counter() - began > budget_s:
            print(f"GPU ({name}): {label}: skipped (past the {budget_s:.0f} s budget)", flush=True)
            continue
        if batch not in flops:
            trainer, micro = setup(batch, "amp_bf16", False)
            with FlopCounterMode(display=False) as counter:
                trainer.train_step(0, micro)
            flops[batch] = counter.get_total_flops()
        flops_per_sample = flops[batch] / batch
        trainer, micro = setup(batch, precision, compiled)
        t0 = time.perf_counter()
        for step in range(1, 1 + warmup):
            trainer.train_step(step, micro)
        sync()
        warm_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for step in range(1 + warmup, 1 + warmup + steps):
            trainer.train_step(step, micro)
        sync()
        seconds = (time.perf_counter() - t0) / steps
        rate = batch / seconds
        row = {"device": name, "model": model, "batch": batch, "precision": precision, "torchcompile": compiled,
               "samples_per_s": rate, "tflop_per_sample": flops_per_sample / 1e12, "warmup_s": warm_s,
               "mfu": flops_per_sample * rate / peak if peak else None,
               "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None}
        results.append(row)
        line = (f"GPU ({name}): {label}, synthetic data: {rate:.0f} samples/s, "
                f"{flops_per_sample * batch / 1e12:.2f} TFLOP/step, warm-up {warm_s:.0f} s")
        if peak:
            line += f", MFU {100 * row['mfu']:.1f}% of {peak / 1e12:.0f} TFLOP/s bf16 peak"
        print(line, flush=True)
        del trainer, micro
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temp folder)")
    parser.add_argument("--threads", default="1", help="OMP_NUM_THREADS for both trainers ('' = unset)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["trainer", "loader", "gpu"])
    parser.add_argument("--gpu-budget-s", type=float, default=420.0,
                        help="start no further GPU config after this many seconds")
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

        if torch.cuda.is_available():
            results = gpu_benchmark(budget_s=args.gpu_budget_s)
            (root / "gpu.json").write_text(json.dumps(results, indent=1))
        else:
            print("GPU: no CUDA device here; the ViT-B-16 bf16 samples/s and MFU figures need one")


if __name__ == "__main__":
    main()
