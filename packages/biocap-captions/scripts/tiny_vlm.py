"""Build a tiny random-weight InternVL (transformers format) in a folder, with no download.

vLLM loads it like InternVL3: a Qwen2 language model, an InternViT vision
tower, the GotOcr2 image processor and a chat template that renders image
parts. Weights are random (seeded), so captions are gibberish; what the model
proves is that prompts, images and sampling parameters reach vLLM and text
comes back. Sizes follow ../../shared/reference/vllm-on-cpu.md: head
dimension 64, float32, vocabulary the size of the tokenizer (a byte-level BPE
without merges: 256 byte tokens plus the special tokens).

Run inside the vllm venv: ``python tiny_vlm.py OUT_DIR``.
"""

from __future__ import annotations

import sys
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]

#: InternVL-hf style: image parts become the context-image token on their own line.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '<IMG_CONTEXT>\\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

IMAGE_SIZE, PATCH, IMAGE_SEQ = 112, 14, 16  # (112/14)^2 * 0.5^2 = 16 tokens per image


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_vocab = {ch: i for i, ch in enumerate(pre_tokenizers.ByteLevel.alphabet())}
    raw = Tokenizer(models.BPE(vocab=dict(sorted(byte_vocab.items(), key=lambda kv: kv[1])), merges=[]))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    raw.decoder = decoders.ByteLevel()
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


def build(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
    )

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    vocab = len(tokenizer)
    config = InternVLConfig(
        vision_config=dict(
            hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
            image_size=[IMAGE_SIZE, IMAGE_SIZE], patch_size=[PATCH, PATCH],
        ),
        text_config=dict(
            model_type="qwen2", vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=8192,
            bos_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        downsample_ratio=0.5,
        image_seq_length=IMAGE_SEQ,
    )
    model = InternVLForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(
            size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, crop_to_patches=False,
        ),
        tokenizer=tokenizer,
        video_processor=InternVLVideoProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        image_seq_length=IMAGE_SEQ,
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
