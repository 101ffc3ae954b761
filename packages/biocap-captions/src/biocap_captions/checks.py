"""Caption cleaning and quality flags.

Models wrap answers in chat markup, Markdown or labels ("Caption: ...") and
sometimes run past the stop strings; the cleaned text is what gets stored and
trained on. Nothing is dropped for style: problems become flags in the
captions table, and only a caption left empty becomes an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from biocap_captions.engine import STOP_STRINGS

_TURN_START = re.compile(r"<\|im_start\|>\s*(?:assistant|user|system)?\b")
_CHAT_TOKEN = re.compile(r"<\|[^|>]{1,40}\|>|</?s>|<(?:img|/img|IMG_CONTEXT|image)>")
_HTML_TAG = re.compile(r"</?[a-zA-Z][^<>]{0,80}>")
_MARKDOWN = re.compile(r"\*\*|__|`+|^#+\s*|^\s*[-*•]\s+|^\s*\d+[.)]\s+", re.MULTILINE)
_LABEL = re.compile(r"^\s*(?:caption|answer|assistant|description)\s*:\s*", re.IGNORECASE)
_QUOTES = "\"'“”‘’"

#: Flag names, in the order they are written.
FLAGS = ("truncated", "over_word_limit", "no_species_name", "markup_removed")


@dataclass(frozen=True)
class CheckedCaption:
    caption: str
    word_count: int
    names_species: bool
    flags: str


def clean_caption(text: str) -> tuple[str, bool]:
    """The caption without stop strings, chat tokens, Markdown, HTML, labels or wrapping quotes.

    Returns the text and whether anything but whitespace was removed. Text
    after a stop string is dropped (a model that ignored the stop went on
    with another turn).
    """
    cut = text
    for stop in STOP_STRINGS:
        cut = cut.split(stop, 1)[0]
    cleaned = _CHAT_TOKEN.sub(" ", _TURN_START.sub(" ", cut))
    cleaned = _HTML_TAG.sub(" ", cleaned)
    cleaned = _MARKDOWN.sub("", cleaned)
    cleaned = _LABEL.sub("", cleaned)
    cleaned = " ".join(cleaned.split())
    if len(cleaned) >= 2 and cleaned[0] in _QUOTES and cleaned[-1] in _QUOTES:
        cleaned = cleaned[1:-1].strip()
    return cleaned, cleaned != " ".join(text.split())


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s-]", " ", text.lower()).split())


def names_species(caption: str, *names: str) -> bool:
    """Whether any of the names appears in the caption (case, punctuation and spacing ignored)."""
    haystack = f" {_normal(caption)} "
    return any(f" {_normal(name)} " in haystack for name in names if name and _normal(name))


def check_caption(
    text: str, finish_reason: str | None, display_name: str, scientific_name: str, word_limit: int
) -> CheckedCaption:
    """Clean a raw completion and compute its word count, species-name presence and flags."""
    caption, stripped = clean_caption(text)
    words = len(caption.split())
    named = names_species(caption, display_name, scientific_name)
    raised = {
        "truncated": finish_reason == "length",
        "over_word_limit": words > word_limit,
        "no_species_name": not named,
        "markup_removed": stripped,
    }
    return CheckedCaption(caption, words, named, ",".join(f for f in FLAGS if raised[f]))
