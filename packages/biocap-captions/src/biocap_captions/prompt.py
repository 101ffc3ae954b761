"""The caption prompt: instruction text, format examples, wiki excerpts and chat rendering.

The instruction follows the original's structure (role, anatomy focus, class
examples, optional reference excerpt, word limit, species name, priority
order) in our own words. Any change to the wording must bump
:data:`PROMPT_VERSION`, which is stored with every caption; the snapshot test
fails until it is bumped. The instruction is never wrapped in hand-written
chat markup: engines render it through the model's own chat template.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from biocap_core import schemas
from biocap_core.errors import BioCAPError

#: Stored with every caption; bump it whenever the rendered instruction changes.
PROMPT_VERSION = "traits-v1"

#: The original's 347 class-specific format examples, shipped with the package.
DEFAULT_FORMAT_EXAMPLES = files("biocap_captions") / "data" / "format_examples.parquet"

#: Used when a class has no examples: three kingdoms, one trait sentence each.
FALLBACK_EXAMPLES: tuple[str, ...] = (
    (
        "The fly agaric, Amanita muscaria, has a domed scarlet cap studded with white warty flecks,"
        " pale free gills and a white stem with a hanging ring."
    ),
    (
        "The lady fern, Athyrium filix-femina, shows arching, light green fronds that are twice"
        " divided into narrow, finely toothed leaflets rising from a central crown."
    ),
    (
        "The Old World swallowtail, Papilio machaon, displays yellow wings crossed by black veins"
        " and bands, a row of blue scales and a red eyespot near each tailed hindwing."
    ),
)

_NUMBER = re.compile(r"(?:^|(?<=\s))(\d{1,2})\s*[.)]\s*")
_PLACEHOLDERS = {"n/a", "na", "none", "null", "-"}
#: End of a sentence: punctuation, maybe a closing quote, then space and a capital or digit
#: (so "A. mellifera" or "24-39.5 g. in" do not end one).
_SENTENCE_END = re.compile(r"[.!?][\"')\]]?(?=\s+[\"'(\[]?[A-Z0-9])")
_ABBREVIATIONS = {
    "e.g.",
    "i.e.",
    "ca.",
    "cf.",
    "sp.",
    "spp.",
    "ssp.",
    "subsp.",
    "var.",
    "approx.",
    "etc.",
    "vs.",
    "st.",
    "mt.",
    "no.",
    "fig.",
    "al.",
}


class PromptError(BioCAPError, ValueError):
    """Prompt inputs (format examples, chat template) cannot be used."""


def split_examples(description: str | None, limit: int = 3) -> list[str]:
    """The numbered example captions of one format-examples cell, cleaned.

    Cells of the original look like "1.The X ...  \\xa0 \\n\\n 2.The Y ..."; only a
    run of consecutive numbers 1, 2, 3 counts as numbering, so "1.5 cm" inside
    an example is not a split point. Text without numbering is one example.
    """
    if not description or not description.strip():
        return []
    text = description.replace("\xa0", " ")
    starts, expected = [], 1
    for match in _NUMBER.finditer(text):
        if int(match.group(1)) == expected:
            starts.append(match)
            expected += 1
    if not starts:
        items = [text]
    else:
        bounds = [m.start() for m in starts[1:]] + [len(text)]
        items = [text[m.end() : end] for m, end in zip(starts, bounds)]
    cleaned = [" ".join(item.split()) for item in items]
    return [item for item in cleaned if item and item.lower() not in _PLACEHOLDERS][:limit]


class FormatExamples:
    """Example captions per taxonomic class (case-insensitive), with the fallback set."""

    def __init__(self, by_class: dict[str, list[str]]):
        self._by_class = by_class

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> FormatExamples:
        """Read a ``class, description`` table (parquet/CSV); ``None`` loads the shipped default."""
        source = Path(str(DEFAULT_FORMAT_EXAMPLES)) if path is None else Path(path)
        table = schemas.FORMAT_EXAMPLES.read(source)
        by_class: dict[str, list[str]] = {}
        for klass, description in table.select("class", "description").iter_rows():
            key = (klass or "").strip().lower()
            examples = split_examples(description)
            if key and examples and key not in by_class:
                by_class[key] = examples
        return cls(by_class)

    def __len__(self) -> int:
        return len(self._by_class)

    def for_class(self, klass: str) -> tuple[list[str], bool]:
        """Examples for a class and whether they are class-specific (False: the fallback set)."""
        examples = self._by_class.get(klass.strip().lower())
        return (examples, True) if examples else (list(FALLBACK_EXAMPLES), False)


def wiki_excerpt(text: str | None, max_chars: int) -> str:
    """The longest run of whole sentences of ``text`` that fits ``max_chars``.

    When even the first sentence is longer, it is cut at a word boundary and
    ends with an ellipsis. Whitespace is collapsed first. Returns "" for no text.
    """
    if not text or max_chars <= 0:
        return ""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    cut = 0
    for match in _SENTENCE_END.finditer(text):
        if match.end() > max_chars:
            break
        if text[: match.end()].rsplit(" ", 1)[-1].lower() not in _ABBREVIATIONS:
            cut = match.end()
    if cut:
        return text[:cut]
    words = text[: max_chars - 1].rsplit(" ", 1)[0]
    return words.rstrip(" ,;:") + "…"


@dataclass(frozen=True)
class PromptParts:
    """What one sample contributes to its prompt."""

    display_name: str
    scientific_name: str
    klass: str
    wiki: str | None = None


@dataclass(frozen=True)
class BuiltPrompt:
    instruction: str
    wiki_used: bool
    class_examples: bool


class PromptBuilder:
    """Builds the instruction text of one sample (see the module docstring for the structure)."""

    def __init__(self, examples: FormatExamples, max_wiki_chars: int = 600, word_limit: int = 20):
        self.examples = examples
        self.max_wiki_chars = max_wiki_chars
        self.word_limit = word_limit
        self._example_block: dict[str, tuple[str, bool]] = {}

    def _examples_for(self, klass: str) -> tuple[str, bool]:
        key = klass.strip().lower()
        if key not in self._example_block:
            examples, specific = self.examples.for_class(key)
            block = "\n".join(f"{i}. {example}" for i, example in enumerate(examples, start=1))
            self._example_block[key] = (block, specific)
        return self._example_block[key]

    def build(self, parts: PromptParts) -> BuiltPrompt:
        name = parts.display_name or parts.scientific_name or "this organism"
        reference_name = parts.scientific_name or name
        examples, specific = self._examples_for(parts.klass)
        excerpt = wiki_excerpt(parts.wiki, self.max_wiki_chars)
        paragraphs = [
            (
                "You are a field biologist. Describe the organism using only what can be seen in"
                " this photograph."
            ),
            "Goal: a single concise caption that names the diagnostic traits visible in the image.",
            (
                "Concentrate on anatomy: colour, shape, pattern, texture and the position of body"
                " parts. Mention the substrate, cues to size or an interaction with another"
                " organism only when they are clearly visible."
            ),
            (
                "Use exact biological terms; avoid vague words such as 'nice', 'interesting' or"
                " 'some'."
            ),
            "Examples of good captions:\n" + examples,
        ]
        if excerpt:
            paragraphs.append(
                f'Reference text about {reference_name}:\n"""{excerpt}"""\n'
                "Use it only to choose the right terms for traits that are visible in the image. "
                "Do not copy it, and do not add traits that the image does not show."
            )
        paragraphs += [
            f"Write at most {self.word_limit} words.",
            f'Include the name "{name}" naturally in the sentence.',
            (
                "Priorities: (1) the most diagnostic visible trait; (2) a second distinctive trait;"
                " (3) context, only if it helps identification."
            ),
            (
                f"For this image of a {name}, write one concise sentence describing its visible"
                " traits."
            ),
        ]
        return BuiltPrompt(
            "\n\n".join(paragraphs), wiki_used=bool(excerpt), class_examples=specific
        )


def chat_messages(instruction: str, image_url: str | None = None) -> list[dict]:
    """One user turn, image first, in the OpenAI chat format (the HF multimodal format without a
    URL)."""
    image = (
        {"type": "image_url", "image_url": {"url": image_url}} if image_url else {"type": "image"}
    )
    return [{"role": "user", "content": [image, {"type": "text", "text": instruction}]}]


class ChatTemplateRenderer:
    """Renders an instruction through a tokenizer's own chat template, with an image slot.

    Templates written for multimodal chat render ``{"type": "image"}`` parts
    themselves (Qwen2-VL, InternVL-hf, LLaVA). Older ones (InternVL's remote-code
    checkpoints such as InternVL3-38B-AWQ) only accept string content and expect
    the model's image placeholder in the text; for those the placeholder is put
    on the first line, as the model's own examples do. Which kind a template is
    is found once, by rendering a probe both ways.
    """

    _PROBE = "probe-7f3a"

    def __init__(
        self, tokenizer, image_placeholder: str | None = "<image>", model: str = "the model"
    ):
        self.tokenizer = tokenizer
        self.image_placeholder = image_placeholder
        self.typed = self._renders_image_parts()
        if not self.typed and not image_placeholder:
            raise PromptError(
                f"the chat template of {model} ignores image parts and no image placeholder is set;"
                " pass the model's placeholder (InternVL: '<image>')"
            )

    def _apply(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def _renders_image_parts(self) -> bool:
        try:
            with_image = self._apply(chat_messages(self._PROBE))
            text_only = self._apply(
                [{"role": "user", "content": [{"type": "text", "text": self._PROBE}]}]
            )
        except (
            Exception
        ):  # a string-only template fails on list content (jinja TemplateError, TypeError)
            return False
        return self._PROBE in with_image and with_image != text_only and "{'type'" not in with_image

    def __call__(self, instruction: str) -> str:
        if self.typed:
            return self._apply(chat_messages(instruction))
        return self._apply(
            [{"role": "user", "content": f"{self.image_placeholder}\n{instruction}"}]
        )
