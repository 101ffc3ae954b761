"""Taxa and the text formats built from them.

Two families of text exist and they differ on purpose, because the published
models were trained and evaluated with them:

* TreeOfLife-10M training texts (BioCLIP's shard writer, ``make_txt`` in
  ``scripts/evobio10m/make_wds.py``): the ranks are first cleaned as BioCLIP's
  ``naming.Taxon`` constructor cleans them (:meth:`Taxon.cleaned`: HTML,
  placeholders, authors and years, subspecies, the genus repeated in the
  species ...); then empty ranks are dropped, whitespace is collapsed and the
  common name falls back to the scientific name, then to the taxonomic name, so
  ``*_com`` texts always carry " with common name ...". A taxon with no rank
  left after cleaning is refused, as the writer's assertion refuses it.
* Evaluation label texts (BioCLIP's ``naming_eval.to_classes``): no cleaning;
  the seven ranks are joined as they are (an empty rank leaves a double space),
  only genus and species are used when the kingdom is empty, and " with common
  name ..." is added only when a common name exists.

Both are reproduced byte for byte, whitespace and case included, on any input
strings; :func:`parse_taxon_tag` reads a taxonTag text back into a :class:`Taxon`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, fields, replace
from functools import cached_property
from typing import Mapping

import polars as pl

from biocap_core.errors import EmptyTaxonError, SchemaError, TaxonParseError

RANKS: tuple[str, ...] = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
"""The seven Linnaean ranks, as named in tags and in our tables."""
#: Levels of the two lowest ranks in :data:`RANKS` (0 kingdom .. 6 species), for code that indexes
#: ranks by level.
GENUS, SPECIES = RANKS.index("genus"), RANKS.index("species")

#: Text types stored as ``<type>.txt`` members of TreeOfLife-10M shards (the keys of
#: :func:`tol_texts`).
TOL_TEXT_TYPES: tuple[str, ...] = (
    "sci",
    "com",
    "taxon",
    "taxonTag",
    "sci_com",
    "taxon_com",
    "taxonTag_com",
)
#: The taxonomic text types BioCAP samples from during training (taxonTag is unused).
TRAIN_TAXONOMIC_TYPES: tuple[str, ...] = ("sci", "com", "taxon", "sci_com", "taxon_com")
#: Label text types of the zero-shot benchmarks, with the classification-table columns each needs
#: (``asis`` is the table's own ``class`` text; the others are built from the ranks).
LABEL_COLUMNS: dict[str, tuple[str, ...]] = {
    "asis": ("class",),
    "sci": ("genus", "species"),
    "com": ("common_name",),
    "taxon": ("kingdom", "phylum", "cls", "order", "family", "genus", "species"),
    "sci_com": ("genus", "species", "common_name"),
    "taxon_com": ("kingdom", "phylum", "cls", "order", "family", "genus", "species", "common_name"),
}
LABEL_TYPES: tuple[str, ...] = tuple(LABEL_COLUMNS)
#: The label types a taxon alone can give: every one but ``asis``, which needs an annotation's own
#: class text (so a list of taxa, such as biocap-predict's index, offers only these).
TAXON_LABEL_TYPES: tuple[str, ...] = tuple(t for t in LABEL_TYPES if t != "asis")


def __getattr__(name: str):
    """``TEMPLATES``, the 81 zero-shot templates ("a photo of {}." then OpenAI's 80 ImageNet ones),
    and ``OPENAI_TEMPLATES``, those 80 alone (the ones pybioclip averages over for custom labels),
    built on first use so that importing text helpers does not import open_clip and torch."""
    if name in ("TEMPLATES", "OPENAI_TEMPLATES"):
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

        openai = tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)
        globals().update(OPENAI_TEMPLATES=openai, TEMPLATES=("a photo of {}.",) + openai)
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def read_templates(path: str | os.PathLike) -> tuple[str, ...]:
    """Templates from a text file (one per line, ``{}`` marks the class; blank lines and ``#`` comments
    skipped) or a JSON list of strings. Raises :class:`SchemaError` naming the file and the bad lines."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise SchemaError(f"{path}: cannot read the templates file: {exc}") from exc
    if path.endswith(".json"):
        items = json.loads(text)
        if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
            raise SchemaError(f"{path}: a JSON templates file must hold a list of strings")
        numbered = list(enumerate(items, start=1))
    else:
        numbered = [(i, line.strip()) for i, line in enumerate(text.splitlines(), start=1)
                    if line.strip() and not line.lstrip().startswith("#")]
    bad = [n for n, t in numbered if not (t.count("{}") == t.count("{") == t.count("}") == 1)]
    if bad:
        raise SchemaError(f"{path}: template(s) at line/item {bad[:5]} need exactly one '{{}}' where the class goes")
    if not numbered:
        raise SchemaError(f"{path}: no templates")
    return tuple(t for _, t in numbered)


def _collapse(text: str) -> str:
    return " ".join(text.split())


# ---- BioCLIP's cleaning (imageomics/naming.py: clean_rank, strip_html, clean_name, Taxon.__post_init__) ----
#: Values that mean "not known" in the source catalogs; compared after lower-casing, not stripped.
_PLACEHOLDERS = ("(unidentified)", "unknown", "pleasehelp")
#: Kingdom names of other classifications, mapped to the ones the rest of the data uses.
_KINGDOM_SYNONYMS = {"metazoa": "animalia", "archaeplastida": "plantae", "chloroplastida": "plantae"}
#: A paired tag such as ``<i>...</i>``; unpaired tags (``<br>``) are left to :data:`_EPITHET_CUTS`.
_HTML_PAIR = re.compile(r"<.*?>(.*?)</.*?>")
#: Where a species epithet ends and authors, years, subspecies or markup begin; each cuts what
#: follows its first match, in this order. ``[A-z]`` is the original's: it also takes the six
#: ASCII characters between ``Z`` and ``a``.
_EPITHET_CUTS = tuple(
    re.compile(p)
    for p in (
        r"\(",
        r"ssp\.",
        r"subsp\.",
        r"var\.",
        r"\w+, \w+ & \w+",
        r"\w+ & \w+",
        r"\w+ \d\d\d\d",
        r"\w+, \d\d\d\d",
        r"\d\d\d\d",
        r" [A-z]\.",
        r"<br ?>",
    )
)


def _strip_html(text: str) -> str:
    """Unwrap paired tags until none is left (nested ones included)."""
    while (unwrapped := _HTML_PAIR.sub(r"\1", text)) != text:
        text = unwrapped
    return text


def _clean_rank(value: str) -> str:
    value = _strip_html(value).lower()
    return "" if value in _PLACEHOLDERS else value


def _clean_epithet(name: str) -> str:
    name = _strip_html(name.lower()).strip()
    for pattern in _EPITHET_CUTS:
        match = pattern.search(name)
        if match:
            name = name[: match.start()].strip()
    return name


def _split_genus(genus: str, species: str) -> tuple[str, str]:
    """Take a genus written into the species value out of it, and undo a doubled epithet."""
    first, *rest = species.split()
    if rest and first == genus:
        species = " ".join(rest)
    elif rest and not genus:
        genus, species = first, " ".join(rest)
    words = species.split()
    if len(words) == 2 and words[0] == words[1]:
        species = words[0]
    return genus, species


@dataclass(frozen=True)
class Taxon:
    """A taxon by its seven ranks, as read; any rank may be empty. ``common_name`` is optional.

    The TreeOfLife-10M names (:attr:`scientific`, :attr:`taxonomic`, :attr:`common`,
    :attr:`taxonomic_tag`) are computed from :attr:`cleaned`, so build a Taxon from the
    ranks as a catalog holds them and never from a cleaned one (cleaning twice can cut more).
    The evaluation labels (:func:`label_text`) use the ranks as read.
    """

    kingdom: str = ""
    phylum: str = ""
    klass: str = ""
    order: str = ""
    family: str = ""
    genus: str = ""
    species: str = ""
    common_name: str = ""

    @classmethod
    def from_mapping(cls, row: Mapping[str, object]) -> "Taxon":
        """Build from a table row; accepts ``cls`` or ``class`` and ``common_name`` or ``common``.

        ``cls`` wins over ``class`` because the rare-species layout has both, with
        ``class`` holding the label text and ``cls`` the rank.

        Missing and null values become empty strings (pandas ``fillna('')`` in the original).
        """

        def get(*names: str) -> str:
            for name in names:
                value = row.get(name)
                if value is not None:
                    return str(value)
            return ""

        return cls(
            kingdom=get("kingdom"),
            phylum=get("phylum"),
            klass=get("cls", "class"),
            order=get("order"),
            family=get("family"),
            genus=get("genus"),
            species=get("species"),
            common_name=get("common_name", "common"),
        )

    def ranks(self) -> tuple[str, ...]:
        return (self.kingdom, self.phylum, self.klass, self.order, self.family, self.genus, self.species)

    def rank(self, name: str) -> str:
        return self.ranks()[RANKS.index(name)]

    @cached_property
    def cleaned(self) -> "Taxon":
        """The ranks as BioCLIP's ``naming.Taxon`` constructor leaves them before the shard writer runs.

        Every rank loses paired HTML tags and is lower-cased; the placeholders ``unknown``,
        ``(unidentified)`` and ``pleasehelp`` become empty; the species epithet is cut before
        authors, years, ``ssp.``/``subsp.``/``var.``, initials (``L.``) and ``<br>``; Metazoa,
        Archaeplastida and Chloroplastida become Animalia and Plantae; a genus written into the
        species is dropped from it (or fills an empty genus rank) and a doubled epithet
        (``leo leo``) becomes one. Whitespace is stripped only around the epithet, as in the
        original, and the common name is kept as it is.
        """
        kingdom, phylum, klass, order, family, genus, species = (_clean_rank(r) for r in self.ranks())
        kingdom = _KINGDOM_SYNONYMS.get(kingdom, kingdom)
        species = _clean_epithet(species)
        if species:
            genus, species = _split_genus(genus, species)
        ranks = (_clean_rank(r) for r in (kingdom, phylum, klass, order, family, genus, species))
        return replace(self, **dict(zip(_FIELD_NAMES, ranks)))

    # ---- TreeOfLife-10M training names, from the cleaned ranks ----
    def _written(self) -> tuple[str, ...]:
        """The cleaned ranks as the writer prints them: capitalised, the species epithet lower-case."""
        clean = self.cleaned.ranks()
        return tuple(r.capitalize() for r in clean[:6]) + (clean[6].lower(),)

    def tagged(self) -> list[tuple[str, str]]:
        """(rank, value) pairs of the ranks the writer tags (those not empty)."""
        return [(rank, value) for rank, value in zip(RANKS, self._written()) if value]

    @property
    def scientific(self) -> str:
        """Genus and species epithet (``scientific_name.txt``)."""
        written = self._written()
        return _collapse(f"{written[5]} {written[6]}").capitalize()

    @property
    def taxonomic(self) -> str:
        """The non-empty ranks, kingdom first (``taxonomic_name.txt``)."""
        return _collapse(" ".join(self._written()))

    @property
    def common(self) -> str:
        """The common name, falling back to the scientific, then the taxonomic name."""
        return self.common_name or self.scientific or self.taxonomic

    @property
    def taxonomic_tag(self) -> str:
        return " ".join(f"{rank} {value}" for rank, value in self.tagged())


_FIELD_NAMES = tuple(f.name for f in fields(Taxon))


def _refuse_empty(taxon: Taxon) -> None:
    """Raise where BioCLIP's writer fails its ``not taxon.empty`` assertion, rather than write
    "a photo of ." for a taxon whose every rank was cleaned away."""
    if not any(taxon.cleaned.ranks()):
        raise EmptyTaxonError(
            f"{taxon}: no rank is left after BioCLIP's cleaning, so the shard writer has no text for it"
        )


def tol_names(taxon: Taxon) -> dict[str, str]:
    """The raw name members of a TreeOfLife-10M sample (``scientific_name.txt`` ...).

    Raises :class:`EmptyTaxonError` for a taxon with no rank left after cleaning.
    """
    _refuse_empty(taxon)
    return {
        "scientific_name": taxon.scientific,
        "taxonomic_name": taxon.taxonomic,
        "common_name": taxon.common,
    }


def tol_texts(taxon: Taxon) -> dict[str, str]:
    """All seven TreeOfLife-10M texts of a taxon, keyed by text type (``sci`` ... ``taxonTag_com``).

    Raises :class:`EmptyTaxonError` for a taxon with no rank left after cleaning.
    """
    _refuse_empty(taxon)
    sci, taxonomic, tag, common = taxon.scientific, taxon.taxonomic, taxon.taxonomic_tag, taxon.common
    return {
        "sci": f"a photo of {sci}.",
        "com": f"a photo of {common}.",
        "taxon": f"a photo of {taxonomic}.",
        "taxonTag": f"a photo of {tag}.",
        "sci_com": f"a photo of {sci} with common name {common}.",
        "taxon_com": f"a photo of {taxonomic} with common name {common}.",
        "taxonTag_com": f"a photo of {tag} with common name {common}.",
    }


_TAG_RE = re.compile(
    r"^(?:a photo of)?"
    + "".join(rf"(?:(?:^| ){rank} (?P<{'klass' if rank == 'class' else rank}>.+?))?" for rank in RANKS)
    + r"(?: with common name (?P<common_name>.+?))?\.?$"
)


def parse_taxon_tag(text: str) -> Taxon:
    """Parse a ``taxonTag`` or ``taxonTag_com`` text back into a Taxon.

    Accepts the text with or without the "a photo of" prefix and final period.
    Raises :class:`TaxonParseError` naming the text when it holds no rank tag.
    """
    stripped = text.strip()
    match = _TAG_RE.match(stripped)
    if match is None or not any(match.group(g) for g in _FIELD_NAMES[:7]):
        raise TaxonParseError(
            f"not a taxonTag text: {text!r} (expected 'a photo of kingdom X phylum Y ... species z.')"
        )
    return Taxon(**{k: v or "" for k, v in match.groupdict().items()})


def class_of_tag(text: str) -> str:
    """The class rank named in a taxonTag text, lower-cased ("" when absent)."""
    try:
        return parse_taxon_tag(text).klass.lower()
    except TaxonParseError:
        return ""


# ---- Evaluation label texts (BioCLIP naming_eval) ----
def _eval_scientific(t: Taxon) -> str | None:
    if t.species:
        return t.genus.capitalize() + " " + t.species.lower()
    if t.genus:
        return t.genus.capitalize()
    return None


def _eval_taxonomic(t: Taxon) -> str:
    if t.kingdom == "":
        return " ".join([t.genus.capitalize(), t.species.lower()])
    return " ".join([r.capitalize() for r in t.ranks()[:6]] + [t.species.lower()])


def label_text(taxon: Taxon, label_type: str, asis: str | None = None) -> str | None:
    """The zero-shot label text of one annotation row, as the original builds it.

    ``asis`` is the row's ``class`` value, used by the ``asis`` type. Returns
    None where the original would produce no name (``sci`` with no genus).
    """
    if label_type == "asis":
        return asis
    if label_type == "sci":
        return _eval_scientific(taxon)
    if label_type == "com":
        return taxon.common_name
    if label_type == "taxon":
        return _eval_taxonomic(taxon)
    if label_type == "sci_com":
        sci = _eval_scientific(taxon)
        if taxon.common_name == "" or sci is None:
            return sci
        return sci + " with common name " + taxon.common_name
    if label_type == "taxon_com":
        taxonomic = _eval_taxonomic(taxon)
        if taxon.common_name == "":
            return taxonomic
        return taxonomic + " with common name " + taxon.common_name
    raise ValueError(f"unknown label type {label_type!r}; expected one of {LABEL_TYPES}")


def label_texts(table: pl.DataFrame, label_type: str, source: str = "<table>") -> list[str]:
    """Label text of every row of a classification table (see :data:`LABEL_COLUMNS`).

    Raises :class:`SchemaError` naming the file when the table lacks the columns
    the label type needs, or rows for which it yields no text.
    """
    if label_type not in LABEL_COLUMNS:
        raise ValueError(f"unknown label type {label_type!r}; expected one of {LABEL_TYPES}")
    missing = [c for c in LABEL_COLUMNS[label_type] if c not in table.columns]
    if missing:
        raise SchemaError(
            f"{source}: label type {label_type!r} needs column(s) {missing}, which the table lacks "
            f"(it has {table.columns})"
        )
    asis = table["class"].to_list() if "class" in table.columns else [None] * table.height
    labels = [label_text(Taxon.from_mapping(row), label_type, a) for row, a in zip(table.iter_rows(named=True), asis)]
    empty = [i for i, label in enumerate(labels) if not label]
    if empty:
        raise SchemaError(
            f"{source}: label type {label_type!r} gives no text for {len(empty)} row(s); first rows (0-based): "
            f"{empty[:5]}"
        )
    return labels
