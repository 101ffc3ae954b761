"""Plain-text species descriptions from article wikitext.

The original scraped rendered HTML and took the first section whose heading
contains one of a list of keywords, in priority order, falling back to the
lead. We do the same on wikitext with mwparserfromhell, so one batched
``prop=revisions`` request serves 50 pages and no HTML is fetched. Markup,
references, files, tables and templates are stripped; the few inline
templates that carry prose (``{{convert}}``, ``{{lang}}``, ...) are kept as
their text, because dropping them leaves holes such as "grows to  tall".
"""

from __future__ import annotations

from dataclasses import dataclass

import mwparserfromhell
from mwparserfromhell.nodes import Comment, Heading, Tag, Template, Text, Wikilink
from mwparserfromhell.wikicode import Wikicode

#: Heading keywords in the priority order of the original's
#: ``wiki_scraper/scraper_unique_names.py``.
SECTION_KEYWORDS: tuple[str, ...] = (
    "description",
    "morphology",
    "appearance",
    "identification",
    "feature",
    "characteristics",
    "physical",
    "structure",
    "explanation of names",
)
#: The ``section`` value of a record whose text comes from the lead.
LEAD = "lead"

_DROP_TAGS = {
    "ref",
    "references",
    "table",
    "gallery",
    "imagemap",
    "timeline",
    "math",
    "chem",
    "score",
    "graph",
    "templatestyles",
    "syntaxhighlight",
    "includeonly",
    "mapframe",
}
_DROP_LINK_NAMESPACES = {"file", "image", "media", "category"}
# Inline templates whose first positional parameter is the visible text.
_TEXT_TEMPLATES = {
    "nowrap",
    "nobr",
    "small",
    "smaller",
    "big",
    "em",
    "strong",
    "var",
    "mvar",
    "abbr",
    "not a typo",
    "sic",
    "visible anchor",
    "vanchor",
    "ill",
    "taxlink",
    "gloss",
    "noitalic",
    "linktext",
    "lt",
    "sc",
    "smallcaps",
    "angbr",
}
_LITERAL_TEMPLATES = {
    "snd": " – ",
    "spaced ndash": " – ",
    "ndash": "–",
    "mdash": "—",
    "spaced en dash": " – ",
    "nbsp": " ",
    "'": "'",
    "'s": "'s",
    "-": "",
    "shy": "",
    "zwsp": "",
}
_RANGE_WORDS = {
    "-": "–",
    "–": "–",
    "to": " to ",
    "and": " and ",
    "or": " or ",
    "by": " by ",
    "x": " × ",
    "×": " × ",
    "+/-": " ± ",
    "to(-)": " to ",
    "and(-)": " and ",
}


def parse(wikitext: str) -> Wikicode:
    """Parse wikitext, leaving ''italic'' and '''bold''' quotes as text.

    Building Wikicode trees is most of the spider's CPU time, and style tags are
    a third of it; the quotes are dropped from the final text instead.
    """
    return mwparserfromhell.parse(wikitext, skip_style_tags=True)


def _unquote(text: str) -> str:
    return text.replace("'''", "").replace("''", "")


@dataclass(frozen=True)
class Extract:
    """Text chosen from one article: the heading it came from (or ``lead``) and the text."""

    section: str
    text: str


def template_name(template: Template) -> str:
    """Normalised template name: stripped, lower-case, underscores as spaces."""
    return " ".join(template.name.strip_code().replace("_", " ").split()).lower()


def _positional(template: Template) -> list[str]:
    return [_unquote(p.value.strip_code()).strip() for p in template.params if not p.showkey]


def _template_text(template: Template) -> str:
    """The visible text of an inline prose template, or "" for everything else."""
    name = template_name(template)
    if name in _LITERAL_TEMPLATES:
        return _LITERAL_TEMPLATES[name]
    if (
        name not in _TEXT_TEMPLATES
        and name not in ("convert", "cvt", "lang")
        and not name.startswith("lang-")
    ):
        return ""
    args = _positional(template)
    if name in ("convert", "cvt") and len(args) >= 2:
        if len(args) >= 4 and args[1] in _RANGE_WORDS:
            return f"{args[0]}{_RANGE_WORDS[args[1]]}{args[2]} {args[3]}"
        return f"{args[0]} {args[1]}"
    if (name == "lang" or name.startswith("lang-")) and args:
        return args[-1]
    if name in _TEXT_TEMPLATES and args:
        return args[0]
    return ""


def _is_dropped_link(link: Wikilink) -> bool:
    title = str(link.title).strip().lstrip(":")
    prefix = title.split(":", 1)[0].strip().lower() if ":" in title else ""
    # [[fr:...]]-style interlanguage links have a two- or three-letter language prefix.
    return prefix in _DROP_LINK_NAMESPACES or (
        0 < len(prefix) <= 3 and prefix.isalpha() and prefix.islower()
    )


def _remove_markup(code: Wikicode) -> None:
    """Drop references, files, tables, comments and non-prose templates in place."""
    for node in code.filter(recursive=True):
        try:
            if isinstance(node, Template):
                text = _template_text(node)
                if text:
                    code.replace(node, Text(text))
                else:
                    code.remove(node)
            elif isinstance(node, Comment):
                code.remove(node)
            elif isinstance(node, Tag):
                tag = str(node.tag).strip().lower()
                if tag in _DROP_TAGS:
                    code.remove(node)
                elif tag == "br":
                    code.replace(node, Text(" "))
            elif isinstance(node, Wikilink) and _is_dropped_link(node):
                code.remove(node)
        except ValueError:
            pass  # already gone with an enclosing node removed earlier


_ITEM = "\ue000"  # a private-use character marking list items until the text is split into lines


def plain_text(wikitext: str | Wikicode) -> str:
    """Wikitext to plain text: one line per paragraph or list item, markup stripped.

    A parsed ``Wikicode`` is cleaned in place (parsing is most of the cost, so
    :func:`describe` does it once per page); pass a string to keep a tree intact.
    """
    code = parse(wikitext) if isinstance(wikitext, str) else wikitext
    for heading in code.filter_headings(recursive=False):
        code.remove(heading)
    _remove_markup(code)
    for tag in code.filter_tags(recursive=False):
        if tag.wiki_markup and str(tag.tag) in ("li", "dt", "dd"):
            code.replace(tag, Text(_ITEM))  # "* item" is a line of its own, as the original's <li>
    text = _unquote(code.strip_code(normalize=True, collapse=False))
    lines: list[str] = []
    paragraph: list[str] = []
    for raw in text.splitlines() + [""]:
        item_start = raw.lstrip().startswith(_ITEM)
        line = " ".join(raw.replace(_ITEM, " ").split())  # "; term : def" leaves a marker mid-line
        if line.startswith("__") and line.endswith("__"):  # behaviour switches such as __NOTOC__
            line = ""
        if item_start or not line:
            if paragraph:
                lines.append(" ".join(paragraph))
                paragraph.clear()
            if line:
                lines.append(line)
        else:
            paragraph.append(line)
    return "\n".join(lines)


def describe(wikitext: str | Wikicode) -> Extract | None:
    """The description of an article: the first keyword section with text, else the lead.

    Keywords are tried in priority order and, for each, every heading (levels 2
    to 6) that contains it, case-insensitively; a section's text stops at the
    next heading of any level, as the original's did. ``None`` if neither a
    keyword section nor the lead has any text. A ``Wikicode`` argument is
    consumed (its sections are cleaned in place).
    """
    code = parse(wikitext) if isinstance(wikitext, str) else wikitext
    first = code.get_sections(include_lead=True, flat=True)
    lead = first[0] if first and not isinstance(first[0].get(0), Heading) else None
    sections = []
    for section in code.get_sections(levels=[2, 3, 4, 5, 6], flat=True, include_headings=True):
        heading = section.get(0)
        if isinstance(heading, Heading):
            title = " ".join(_unquote(heading.title.strip_code()).split())
            sections.append((title, title.lower(), section))
    for keyword in SECTION_KEYWORDS:
        for title, lowered, section in sections:
            if keyword in lowered:
                text = plain_text(section)
                if text:
                    return Extract(title, text)
    if lead is not None:
        text = plain_text(lead)
        if text:
            return Extract(LEAD, text)
    return None
