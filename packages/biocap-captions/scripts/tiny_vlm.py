"""Build a tiny random-weight InternVL (transformers format) in a folder, with no download.

vLLM loads it like InternVL3: a Qwen2 language model, an InternViT vision
tower, the GotOcr2 image processor and a chat template that renders image
parts. Weights are random (seeded), so captions are gibberish; what the model
proves is that prompts, images and sampling parameters reach vLLM and text
comes back. Sizes follow ../../shared/reference/vllm-on-cpu.md: head
dimension 64, float32, vocabulary the size of the tokenizer (a byte-level BPE
without merges: 256 byte tokens plus the special tokens).

``build(out, size="1b")`` builds the same architecture at InternVL3-1B's
sizes (InternViT-300M at 448 px with up to 12 tiles plus a thumbnail, Qwen2.5-0.5B
layers), ``"2b"`` at InternVL3-2B's (Qwen2.5-1.5B), in bfloat16, for the GPU
benchmark (benchmarks/captions_throughput.py --vllm); ``"tiny-tiled"`` is the
tiny model with that tiling, for a CPU smoke run of the benchmark. With
``train_texts``, the tokenizer is a byte-level BPE trained on them (merges), so
prompts take about as many tokens as with the real tokenizer; the vocabulary is
then a few thousand tokens, not InternVL's 151,674 (the output layer is smaller).

Run inside the vllm venv: ``python tiny_vlm.py OUT_DIR``.
"""

from __future__ import annotations

import sys
from pathlib import Path

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<video>",
]

#: InternVL-hf style: image parts become the context-image token on their own line.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}{% if"
    " message['content'] is string %}{{ message['content'] }}{% else %}{% for part in"
    " message['content'] %}{% if part['type'] == 'image' %}{{ '<IMG_CONTEXT>\\n' }}{% elif"
    " part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}{{"
    " '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n'"
    " }}{% endif %}"
)

IMAGE_SIZE, PATCH = 112, 14  # tiny: (112/14)^2 * 0.5^2 = 16 tokens per image

_TINY = dict(
    vision=dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256),
    text=dict(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
    ),
    image=IMAGE_SIZE,
)
#: Vision and text sizes: tiny (tests), and InternVL3-1B / -2B (InternViT-300M + Qwen2.5-0.5B /
#: -1.5B).
SIZES = {
    "tiny": {**_TINY, "tiles": 1},
    "tiny-tiled": {**_TINY, "tiles": 12},
    "1b": dict(
        vision=dict(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
        ),
        text=dict(
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
        ),
        image=448,
        tiles=12,
    ),
    "2b": dict(
        vision=dict(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
        ),
        text=dict(
            hidden_size=1536,
            intermediate_size=8960,
            num_hidden_layers=28,
            num_attention_heads=12,
            num_key_value_heads=2,
        ),
        image=448,
        tiles=12,
    ),
}


def build_tokenizer(train_texts=None, vocab_size: int = 4096):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    byte_vocab = {ch: i for i, ch in enumerate(pre_tokenizers.ByteLevel.alphabet())}
    raw = Tokenizer(
        models.BPE(vocab=dict(sorted(byte_vocab.items(), key=lambda kv: kv[1])), merges=[])
    )
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(
        add_prefix_space=False, use_regex=train_texts is not None
    )
    raw.decoder = decoders.ByteLevel()
    if train_texts is not None:
        raw.train_from_iterator(
            train_texts,
            trainers.BpeTrainer(
                vocab_size=vocab_size,
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                show_progress=False,
            ),
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS,
        extra_special_tokens={
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
        model_max_length=8192,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build(out: Path, seed: int = 0, size: str = "tiny", train_texts=None) -> Path:
    import torch
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
    )

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(train_texts)
    vocab = len(tokenizer)
    spec = SIZES[size]
    side, tiles = spec["image"], spec["tiles"]
    seq = (side // PATCH) ** 2 // 4  # tokens per tile after the 0.5 pixel shuffle
    config = InternVLConfig(
        vision_config=dict(**spec["vision"], image_size=[side, side], patch_size=[PATCH, PATCH]),
        text_config=dict(
            model_type="qwen2",
            vocab_size=vocab,
            **spec["text"],
            max_position_embeddings=32768,
            bos_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            tie_word_embeddings=False,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        downsample_ratio=0.5,
        image_seq_length=seq,
    )
    dtype = torch.float32 if size.startswith("tiny") else torch.bfloat16
    with torch.device(
        "cuda" if torch.cuda.is_available() else "cpu"
    ):  # random init of 1B weights: seconds on a GPU
        model = InternVLForConditionalGeneration(config).to(dtype).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(
            size={"height": side, "width": side},
            crop_to_patches=tiles > 1,
            min_patches=1,
            max_patches=tiles,
        ),
        tokenizer=tokenizer,
        video_processor=InternVLVideoProcessor(size={"height": side, "width": side}),
        image_seq_length=seq,
        chat_template=CHAT_TEMPLATE,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tiny_vlm.py OUT_DIR")
    print(build(Path(sys.argv[1])))
