"""``captions_throughput.py --vllm``: vLLM's own offline throughput against our pipeline's, on one
model.

See captions_throughput.py's docstring for what is measured. The model has
random weights, so answers are fixed at 50 tokens (``ignore_eos``, no stop
strings) and the work per image does not depend on them. Every image is
distinct (a per-image stamp): identical images would hit vLLM's prefix and
multimodal caches and overstate the rate.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid as uuidlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "packages" / "biocap-captions" / "scripts"
#: TreeOfLife-sized images: longest side 500 px, the aspect ratios of common cameras, both
#: orientations.
PHOTO_SIZES = [(500, 375), (375, 500), (500, 333), (500, 500)]
ANSWER_TOKENS = 50
#: InternVL3-38B's two parts, InternViT-6B-448px-V2.5 and Qwen2.5-32B, as their config.json files
#: give them (check against the checkpoint before relying on the projection). Only what the FLOPs
#: count needs.
INTERNVL3_38B = {
    "image": 448,
    "vision": dict(hidden_size=3200, num_hidden_layers=45, intermediate_size=12800),
    "text": dict(
        hidden_size=5120,
        num_hidden_layers=64,
        intermediate_size=27648,
        num_attention_heads=40,
        num_key_value_heads=8,
        vocab_size=151674,
    ),
}


def photo_shard(toy: Path, path: Path, n: int, seed: int) -> dict[str, str]:
    """A shard of ``n`` distinct ~500 px JPEGs (toy images scaled up, plus mild noise and a
    per-image stamp), with the text members of the toy's samples. Returns uuid -> toy uuid (for the
    catalog).
    """
    import io

    import numpy as np
    import webdataset as wds
    from PIL import Image

    from biocap_core.shards import iter_samples

    rng = np.random.default_rng(seed)
    base = list(iter_samples(str(toy / "train" / "shard-000000.tar")))
    noise = {
        size: rng.integers(-12, 13, (size[1], size[0], 3), dtype=np.int16) for size in PHOTO_SIZES
    }
    origin = {}
    with wds.TarWriter(str(path)) as sink:
        for i in range(n):
            sample, size = base[i % len(base)], PHOTO_SIZES[i % len(PHOTO_SIZES)]
            pixels = np.asarray(
                Image.open(io.BytesIO(sample["jpg"])).convert("RGB").resize(size), dtype=np.int16
            )
            pixels = np.clip(pixels + noise[size], 0, 255).astype(np.uint8)
            pixels[0, :32] = ((seed << 24 | i) >> np.arange(32) & 1)[
                :, None
            ] * 255  # a per-image stamp
            jpeg = io.BytesIO()
            Image.fromarray(pixels).save(jpeg, format="JPEG", quality=90)
            key = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"{seed}/{i}"))
            members = {k: v for k, v in sample.items() if not k.startswith("__") and k != "jpg"}
            sink.write({"__key__": key, "jpg": jpeg.getvalue(), **members})
            origin[key] = sample["__key__"]
    return origin


def flops_per_image(spec: dict, tiles: float, prompt_tokens: float, answer_tokens: int) -> float:
    """Forward FLOPs of one image's request (2 per multiply-add): the vision tower over each tile
    (448 px: 1,025 tokens), the MLP projector (256 tokens per tile), the language model over the
    prompt and the answer (weights, attention over the context so far) and the output layer for the
    answer tokens.
    """
    v, t = spec["vision"], spec["text"]
    hv, ht = v["hidden_size"], t["hidden_size"]
    patches = (spec["image"] // 14) ** 2
    vision_tokens = patches + 1
    vision = (
        2
        * v["num_hidden_layers"]
        * vision_tokens
        * (4 * hv * hv + 2 * hv * v["intermediate_size"] + 2 * vision_tokens * hv)
    )
    projector = 2 * patches // 4 * (4 * hv * ht + ht * ht)
    kv = ht // t["num_attention_heads"] * t["num_key_value_heads"]
    per_token = (
        2 * t["num_hidden_layers"] * (2 * ht * ht + 2 * ht * kv + 3 * ht * t["intermediate_size"])
    )
    context = (prompt_tokens / 2) * prompt_tokens + (
        prompt_tokens + answer_tokens / 2
    ) * answer_tokens
    attention = 2 * 2 * t["num_hidden_layers"] * ht * context
    output = 2 * ht * t["vocab_size"] * answer_tokens
    return (
        tiles * (vision + projector)
        + (prompt_tokens + answer_tokens) * per_token
        + attention
        + output
    )


def projection(measured_per_s: float, spec: dict, tiles: float, prompt_tokens: float) -> dict:
    """InternVL3-38B's images/s per GPU, scaled from the measured rate by FLOPs per image (same
    tiles and prompt tokens, 50 answer tokens), and the GPU-hours for 10M images. It assumes the
    same share of the GPU's peak is reached, which holds for compute-bound prefill (image tokens
    dominate); AWQ's 4-bit weights change memory, not FLOPs, and its kernels may reach a lower
    share."""
    ours = flops_per_image(spec, tiles, prompt_tokens, ANSWER_TOKENS)
    big = flops_per_image(INTERNVL3_38B, tiles, prompt_tokens, ANSWER_TOKENS)
    per_s = measured_per_s * ours / big
    return {
        "flops_per_image_measured_model": ours,
        "flops_per_image_38b": big,
        "flops_ratio": big / ours,
        "images_per_s_per_gpu_38b": per_s,
        "gpu_hours_10m_images_38b": 1e7 / per_s / 3600,
        "how": (
            "images/s(38B) = images/s(measured, pipeline) x FLOPs/image(measured model) /"
            " FLOPs/image(38B), FLOPs/image from flops_per_image() at the measured tiles and prompt"
            " tokens"
        ),
    }


def prefix_cache_counters(llm) -> tuple[float, float] | None:
    """(queries, hits) of vLLM's prefix cache, in tokens, from its metrics; None where this vLLM has
    none."""
    try:
        metrics = {m.name: m.value for m in llm.get_metrics() if hasattr(m, "value")}
    except Exception:  # older vLLM (no get_metrics) or stats disabled
        return None
    if "vllm:prefix_cache_queries" not in metrics:
        return None
    return metrics["vllm:prefix_cache_queries"], metrics.get("vllm:prefix_cache_hits", 0.0)


def hit_rate(before, after) -> float | None:
    if before is None or after is None or after[0] == before[0]:
        return None
    return (after[1] - before[1]) / (after[0] - before[0])


def make_engine(model_dir: Path, args):
    from vllm import SamplingParams

    from biocap_captions.engine import SamplingConfig
    from biocap_captions.vllm_engine import VLLMEngine, VLLMOptions

    kwargs = dict(disable_log_stats=False, limit_mm_per_prompt={"image": 1, "video": 0})
    if args.device == "cpu":
        kwargs.update(enforce_eager=True, max_num_seqs=4)
    options = VLLMOptions(
        quantization=None,
        max_model_len=8192,
        dtype="float32" if args.device == "cpu" else "auto",
        enable_prefix_caching={"on": True, "off": False}.get(args.prefix_caching),
    )
    engine = VLLMEngine(
        model=str(model_dir),
        sampling=SamplingConfig(max_tokens=ANSWER_TOKENS),
        options=options,
        llm_kwargs=kwargs,
    )
    engine.sampling_params = SamplingParams(
        temperature=0.6, top_p=0.8, max_tokens=ANSWER_TOKENS, ignore_eos=True
    )
    return engine


def offline(engine, shard: str, prompts, descriptions) -> dict:
    """(a): vLLM's ``LLM.generate`` over all inputs of the shard at once, prepared beforehand (not
    timed)."""
    from biocap_captions.engine import CaptionRequest
    from biocap_captions.prompt import PromptParts
    from biocap_captions.sources import shard_units

    [unit] = shard_units(shard)
    samples = list(unit.samples())
    wikis = descriptions.get_many([s.uuid for s in samples])
    requests = [
        CaptionRequest(
            s.uuid,
            s.image,
            prompts.build(PromptParts(s.display_name, s.scientific_name, s.klass, w)).instruction,
        )
        for s, w in zip(samples, wikis)
    ]
    inputs = [r.prepared for r in engine.prepare(requests)]
    tokenizer = engine.llm.get_tokenizer()
    before = prefix_cache_counters(engine.llm)
    start = time.perf_counter()
    outputs = engine.llm.generate(inputs, engine.sampling_params, use_tqdm=False)
    seconds = time.perf_counter() - start
    prompt = [len(o.prompt_token_ids) for o in outputs]
    text = [len(tokenizer(i["prompt"], add_special_tokens=False)["input_ids"]) for i in inputs]
    return {
        "images": len(inputs),
        "seconds": seconds,
        "images_per_s": len(inputs) / seconds,
        "prefix_cache_hit_rate": hit_rate(before, prefix_cache_counters(engine.llm)),
        "prompt_tokens_mean": sum(prompt) / len(prompt),
        "text_tokens_mean": sum(text) / len(text),
        "answer_tokens": sorted({len(o.outputs[0].token_ids) for o in outputs}),
    }


def pipeline(engine, shard: str, out: Path, prompts, descriptions, batch_size: int) -> dict:
    """(b): our pipeline end to end, shard to parquet."""
    from biocap_captions.pipeline import Captioner, RunOptions
    from biocap_captions.sources import shard_units

    before = prefix_cache_counters(engine.llm)
    start = time.perf_counter()
    report = Captioner(
        engine, prompts, RunOptions(out=out, batch_size=batch_size, progress=False), descriptions
    ).run(shard_units(shard))
    seconds = time.perf_counter() - start
    n = report.captions + report.errors
    return {
        "images": n,
        "seconds": seconds,
        "images_per_s": n / seconds,
        "prefix_cache_hit_rate": hit_rate(before, prefix_cache_counters(engine.llm)),
    }


def run_vllm_benchmark(args) -> None:
    started = time.monotonic()
    deadline = started + args.budget_s
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(SCRIPTS))
    import polars as pl
    from tiny_vlm import SIZES, build

    from biocap_captions.prompt import (
        DEFAULT_FORMAT_EXAMPLES,
        FormatExamples,
        PromptBuilder,
        PromptParts,
    )
    from biocap_captions.sources import load_descriptions
    from biocap_core import schemas
    from biocap_core.toy import ToyConfig, generate

    work = Path(tempfile.mkdtemp(prefix="captions-vllm-"))
    toy = work / "toy"
    generate(
        toy,
        ToyConfig(
            species=20,
            images_per_species=3,
            val_per_species=1,
            eval_per_species=1,
            inquire_queries=2,
            inquire_candidates=4,
            image_size=128,
            shard_size=60,
        ),
    )
    prompts = PromptBuilder(FormatExamples.load())
    texts = (
        schemas.FORMAT_EXAMPLES.read(Path(str(DEFAULT_FORMAT_EXAMPLES)))["description"]
        .drop_nulls()
        .to_list()
    )
    example = prompts.build(
        PromptParts("House sparrow", "Passer domesticus", "aves", "A small brown bird.")
    ).instruction
    model_dir = build(work / "model", size=args.size, train_texts=texts + [example] * 20)
    engine = make_engine(model_dir, args)
    ready = time.monotonic()
    print(f"model {args.size} built and vLLM started in {ready - started:.0f} s", flush=True)

    catalog = schemas.CATALOG.read(toy / "catalog.parquet")
    by_uuid = {row["uuid"]: row for row in catalog.iter_rows(named=True)}

    def shard(name: str, n: int, seed: int):
        origin = photo_shard(toy, work / f"{name}.tar", n, seed)
        rows = [by_uuid[o] | {"uuid": u} for u, o in origin.items()]
        bench_catalog = pl.DataFrame(rows, schema=catalog.schema)
        return str(work / f"{name}.tar"), load_descriptions(
            toy / "wiki" / "wiki_descriptions.parquet", bench_catalog
        )

    warm_shard, warm_wiki = shard("warm", min(64, args.max_images), seed=1)
    warm = offline(engine, warm_shard, prompts, warm_wiki)  # also compiles and warms vLLM
    left = deadline - time.monotonic()
    # (a) and (b) at the warm-up rate, plus making the images, in 60% of what is left
    n = max(16, min(args.max_images, int(warm["images_per_s"] * left * 0.6 / 2)))
    print(
        f"warm-up: {warm['images_per_s']:.1f} images/s; measuring {n} images each for (a) and (b)",
        flush=True,
    )
    a_shard, a_wiki = shard("a", n, seed=2)
    a = offline(engine, a_shard, prompts, a_wiki)
    b_shard, b_wiki = shard("b", n, seed=3)
    b = pipeline(engine, b_shard, work / "out", prompts, b_wiki, args.batch_size)

    spec = {
        **SIZES[args.size],
        "text": {**SIZES[args.size]["text"], "vocab_size": len(engine.llm.get_tokenizer())},
    }
    # vLLM swaps the image slot (1 token of the text) for <img>, the tiles' tokens and </img>
    tiles = (a["prompt_tokens_mean"] - a["text_tokens_mean"] - 1) / (
        ((spec["image"] // 14) ** 2) // 4
    )
    figures = {
        "device": _device(args.device),
        "vllm": _version("vllm"),
        "model": f"random-weight InternVL, {args.size}",
        "batch_size": args.batch_size,
        "prefix_caching": args.prefix_caching,
        "images_each": n,
        "tiles_per_image_mean": tiles,
        "prompt_tokens_mean": a["prompt_tokens_mean"],
        "offline_a": a,
        "pipeline_b": b,
        "ratio_b_over_a": b["images_per_s"] / a["images_per_s"],
        "images_per_s_per_gpu": b["images_per_s"],
        "gpu_memory_used_gib": _gpu_memory(),
        "projection": projection(b["images_per_s"], spec, tiles, a["prompt_tokens_mean"]),
        "seconds": {
            "start": ready - started,
            "total": time.monotonic() - started,
            "budget": args.budget_s,
        },
    }
    engine.close()
    print(json.dumps(figures, indent=1))
    print(
        f"(a) vLLM offline {a['images_per_s']:.1f} images/s, (b) pipeline {b['images_per_s']:.1f}"
        f" images/s, b/a {figures['ratio_b_over_a']:.2f} (goal >= 0.9); 38B projection"
        f" {figures['projection']['images_per_s_per_gpu_38b']:.2f} images/s per GPU,"
        f" {figures['projection']['gpu_hours_10m_images_38b']:,.0f} GPU-hours for 10M images"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


def _device(kind: str) -> str:
    if kind == "cpu":
        return f"cpu ({os.cpu_count()} cores)"
    import torch

    return torch.cuda.get_device_name(0)


def _gpu_memory() -> float | None:
    """Memory in use on GPU 0 (all processes: vLLM reserves ``gpu_memory_utilization`` of it for the
    KV cache)."""
    try:
        import torch

        free, total = torch.cuda.mem_get_info(0)
    except Exception:  # no CUDA
        return None
    return (total - free) / 2**30


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None
