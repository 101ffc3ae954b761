"""The prompt: snapshot of the versioned text, format examples, wiki excerpts, chat rendering."""

from __future__ import annotations

import os
from pathlib import Path

import jinja2
import polars as pl
import pytest

from biocap_captions.prompt import (
    FALLBACK_EXAMPLES,
    PROMPT_VERSION,
    ChatTemplateRenderer,
    FormatExamples,
    PromptBuilder,
    PromptError,
    PromptParts,
    split_examples,
    wiki_excerpt,
)

SNAPSHOT = Path(__file__).parent / "snapshots" / f"prompt-{PROMPT_VERSION}.txt"

#: Multimodal ChatML as InternVL3-hf and Qwen2-VL write it: image parts become a placeholder token.
TYPED_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{"
    " m['content'] }}{% else %}{% for p in m['content'] %}{% if p['type'] == 'image'"
    " %}<IMG_CONTEXT>\n{% elif p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}{% endif"
    " %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
#: Text-only ChatML, as InternVL's remote-code checkpoints ship it.
STRING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class JinjaTokenizer:
    """The part of a HF tokenizer the renderer uses: ``apply_chat_template`` over a jinja
    template."""

    def __init__(self, template: str):
        self.template = jinja2.Environment().from_string(template)
        self.calls = 0

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        assert tokenize is False
        self.calls += 1
        return self.template.render(messages=messages, add_generation_prompt=add_generation_prompt)


@pytest.fixture(scope="module")
def builder() -> PromptBuilder:
    return PromptBuilder(FormatExamples.load(), max_wiki_chars=200, word_limit=20)


SPARROW = PromptParts(
    "House sparrow",
    "Passer domesticus",
    "Aves",
    "The house sparrow is a small bird of the family Passeridae. Males have a grey crown and black"
    " bib. Females are plain buff-brown. It lives near people across most of the world.",
)
UNKNOWN_CLASS = PromptParts("Toy crawler", "Toyus crawlerus", "Toyopsida", None)


def test_prompt_text_matches_the_snapshot_of_its_version(builder):
    rendered = ChatTemplateRenderer(JinjaTokenizer(TYPED_TEMPLATE))
    parts = []
    for title, sample in (("aves-with-wiki", SPARROW), ("unknown-class-no-wiki", UNKNOWN_CLASS)):
        built = builder.build(sample)
        parts.append(
            f"=== {title}: wiki_used={built.wiki_used} class_examples={built.class_examples}\n"
            f"{rendered(built.instruction)}"
        )
    text = "\n".join(parts)
    if os.environ.get("BIOCAP_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(text)
    assert SNAPSHOT.is_file(), (
        f"no snapshot for prompt {PROMPT_VERSION}; create it with BIOCAP_UPDATE_SNAPSHOTS=1"
    )
    assert text == SNAPSHOT.read_text(), (
        f"the prompt changed: bump PROMPT_VERSION (now {PROMPT_VERSION}) and write a new snapshot "
        "with BIOCAP_UPDATE_SNAPSHOTS=1"
    )


def test_prompt_parts_follow_the_original_order(builder):
    text = builder.build(SPARROW).instruction
    order = [
        "field biologist",
        "diagnostic traits",
        "anatomy",
        "biological terms",
        "Examples of good captions",
        "Reference text about Passer domesticus",
        "at most 20 words",
        'name "House sparrow"',
        "Priorities",
        "For this image of a House sparrow",
    ]
    positions = [text.index(marker) for marker in order]
    assert positions == sorted(positions)
    assert "House Sparrow perches on a wooden fence" in text  # the shipped Aves examples


def test_no_wiki_block_without_a_description_and_fallback_examples_for_unknown_classes(builder):
    built = builder.build(UNKNOWN_CLASS)
    assert not built.wiki_used and not built.class_examples
    assert "Reference text" not in built.instruction
    for example in FALLBACK_EXAMPLES:
        assert example in built.instruction


def test_shipped_format_examples_cover_the_original_classes():
    original = pl.read_parquet(
        Path(__file__).parents[1] / "src/biocap_captions/data/format_examples.parquet"
    )
    assert original.height == 347
    examples = FormatExamples.load()
    # 14 empty cells and one "N/A" fall back to the default set
    assert len(examples) == 332
    insecta, specific = examples.for_class("INSECTA")
    assert (
        specific
        and len(insecta) == 3
        and insecta[0].startswith("The Orchid Mantis, Hymenopus coronatus")
    )
    assert examples.for_class("Phycomycota") == (list(FALLBACK_EXAMPLES), False)


def test_user_format_examples_replace_the_default(tmp_path):
    path = tmp_path / "fx.csv"
    pl.DataFrame({"class": ["Aves"], "description": ["1. A red bird.\n2. A blue bird."]}).write_csv(
        path
    )
    examples = FormatExamples.load(path)
    assert examples.for_class("aves") == (["A red bird.", "A blue bird."], True)
    assert examples.for_class("Insecta")[1] is False


@pytest.mark.parametrize(
    "cell, expected",
    [
        (
            "1.The A, a b, is red.  \xa0 \n\n 2.The C is 1.5 cm long.\n3. The D.",
            ["The A, a b, is red.", "The C is 1.5 cm long.", "The D."],
        ),
        ("One caption without numbering.", ["One caption without numbering."]),
        ("\tN/A", []),
        (None, []),
        ("1. a 2. b 3. c 4. d", ["a", "b", "c"]),
    ],
)
def test_split_examples(cell, expected):
    assert split_examples(cell) == expected


def test_wiki_excerpt_cuts_at_a_sentence_boundary():
    text = (
        "The honey bee (A. mellifera) is a eusocial insect. Workers are 12 mm long and weigh 0.1 g."
        " Queens are larger."
    )
    assert wiki_excerpt(text, 1000) == text
    assert wiki_excerpt(text, 60) == "The honey bee (A. mellifera) is a eusocial insect."
    # "0.1 g." followed by a capital ends a sentence; "A. mellifera" does not
    assert wiki_excerpt(text, len(text) - 1).endswith("weigh 0.1 g.")
    cut = wiki_excerpt("A single sentence that is far too long for the limit", 20)
    assert cut.endswith("…") and len(cut) <= 20
    assert wiki_excerpt(None, 100) == "" and wiki_excerpt("text", 0) == ""


def test_renderer_uses_image_parts_when_the_template_renders_them():
    render = ChatTemplateRenderer(JinjaTokenizer(TYPED_TEMPLATE))
    assert render.typed
    assert (
        render("Describe.")
        == "<|im_start|>user\n<IMG_CONTEXT>\nDescribe.<|im_end|>\n<|im_start|>assistant\n"
    )


def test_renderer_falls_back_to_the_placeholder_for_text_only_templates():
    render = ChatTemplateRenderer(JinjaTokenizer(STRING_TEMPLATE), image_placeholder="<image>")
    assert not render.typed
    assert (
        render("Describe.")
        == "<|im_start|>user\n<image>\nDescribe.<|im_end|>\n<|im_start|>assistant\n"
    )
    with pytest.raises(PromptError, match="ignores image parts"):
        ChatTemplateRenderer(JinjaTokenizer(STRING_TEMPLATE), image_placeholder=None, model="m")
