"""Resolving one binomial to descriptions: the candidate pages, the homonym check, the outcome.

A :class:`Lookup` holds everything known about one binomial and its expected
taxonomies (one for most names, several for the ambiguous list). It does no
I/O: each ``on_*`` method takes an API answer and returns the next
:data:`Action` s, which the spider turns into requests and items. Keeping the
state in plain picklable objects is what lets Scrapy's ``JOBDIR`` save it on
pause and restore it on resume.

Candidates are tried in order: the page the binomial's own title resolves to
(after normalisation and redirects), then the search hits
(an exact title match first, as in the original). A page is accepted for a
taxonomy

* if the binomial is unique and the page was reached by its own title, unless
  the wikitext's taxobox names a conflicting rank (no extra request);
* otherwise (ambiguous binomial, or a search hit) only if its taxobox ranks
  agree (:func:`~biocap_wiki.taxobox.ranks_agree` returns ``True``); ranks
  above the genus come from the rendered taxobox when the wikitext lacks them.
  The genus alone does not count: every homonym shares it, so a page whose
  taxobox shows nothing above the genus is a ``taxonomy mismatch``.

Every taxonomy ends as exactly one :class:`Found` or :class:`Failed`, except
that a ``request failed`` is provisional (see :meth:`Lookup.fail`): the next
run asks again and its outcome supersedes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from biocap_core.taxonomy import RANKS
from biocap_wiki.api import Page, clean_title
from biocap_wiki.extract import Extract, describe, parse
from biocap_wiki.taxobox import has_higher_ranks, ranks_agree, wikitext_ranks

RankValues = tuple[str, ...]
"""One expected taxonomy: the seven rank values kingdom ... species, as in the input list.

A plain tuple, not :class:`biocap_core.taxonomy.Taxon`: it is compared, hashed and pickled
into the JOBDIR state as read, and never cleaned or turned into text."""

NOT_FOUND = "not found"
DISAMBIGUATION_ONLY = "disambiguation only"
TAXONOMY_MISMATCH = "taxonomy mismatch"
NO_CONTENT = "no content"
REQUEST_FAILED = "request failed"


@dataclass(frozen=True)
class Fetch:
    """Fetch these titles with the batched query."""

    titles: tuple[str, ...]


@dataclass(frozen=True)
class Search:
    """Search for pages about the binomial."""

    query: str


@dataclass(frozen=True)
class Render:
    """Render this revision's lead to read the taxobox ranks."""

    title: str
    revid: int


@dataclass(frozen=True)
class Found:
    """A description for one expected taxonomy."""

    taxon: RankValues
    page: Page
    extract: Extract


@dataclass(frozen=True)
class Failed:
    """No description for one expected taxonomy, and why."""

    taxon: RankValues
    reason: str
    detail: str


Action = Fetch | Search | Render | Found | Failed


def _ranks_text(ranks: dict[str, str]) -> str:
    return ", ".join(f"{r}={ranks[r]}" for r in RANKS if ranks.get(r)) or "no taxobox ranks"


@dataclass
class Lookup:
    binomial: str
    taxa: list[RankValues]
    ambiguous: bool
    candidates: list[tuple[str, bool]] = field(default_factory=list)  # (title, reached by search)
    pages: dict[str, Page] = field(default_factory=dict)  # requested title -> page
    rendered: dict[str, dict[str, str]] = field(default_factory=dict)  # page title -> ranks
    waiting: set[tuple[str, str]] = field(default_factory=set)  # ("fetch"|"render"|"search", key)
    evaluated: set[str] = field(default_factory=set)
    mismatches: list[str] = field(default_factory=list)
    saw_disambiguation: bool = False
    searched: bool = False
    cursor: int = 0

    @classmethod
    def new(cls, binomial: str, taxa: list[RankValues]) -> Lookup:
        return cls(binomial=binomial, taxa=list(taxa), ambiguous=len(taxa) > 1)

    @property
    def done(self) -> bool:
        return not self.taxa

    def start(self) -> list[Action]:
        title = clean_title(self.binomial)
        if title is None:  # not a valid page title: only search can find it
            return self._advance()
        self.candidates.append((title, False))
        self.waiting.add(("fetch", title))
        return [Fetch((title,))]

    def on_page(self, requested: str, page: Page) -> list[Action]:
        if ("fetch", requested) not in self.waiting:
            return []  # a duplicate answer (a request re-sent after a resume)
        self.waiting.discard(("fetch", requested))
        self.pages[requested] = page
        return self._advance()

    def on_search(self, query: str, titles: list[str]) -> list[Action]:
        if ("search", query) not in self.waiting:
            return []
        self.waiting.discard(("search", query))
        lowered = query.lower()
        titles = sorted(
            titles, key=lambda t: t.lower() != lowered
        )  # exact title first, as the original
        known = {t for t, _ in self.candidates} | self.evaluated
        new = [t for t in dict.fromkeys(titles) if t not in known]
        self.candidates.extend((t, True) for t in new)
        self.waiting.update(("fetch", t) for t in new)
        return ([Fetch(tuple(new))] if new else []) + self._advance()

    def on_render(self, title: str, ranks: dict[str, str]) -> list[Action]:
        if ("render", title) not in self.waiting:
            return []
        self.waiting.discard(("render", title))
        self.rendered[title] = ranks
        return self._advance()

    def fail(self, detail: str) -> list[Action]:
        """``request failed`` for every remaining taxonomy (a request's retries are spent).

        Not a final outcome: the lookup keeps its taxonomies and what it waits for, so
        :meth:`resend` asks again in the next run, whose outcome supersedes these rows.
        """
        return [Failed(t, REQUEST_FAILED, detail) for t in self.taxa]

    def resend(self) -> list[Action]:
        """The requests this lookup waits for, again (they were lost with an interrupted run)."""
        actions: list[Action] = []
        fetch = tuple(key for kind, key in sorted(self.waiting) if kind == "fetch")
        if fetch:
            actions.append(Fetch(fetch))
        for kind, key in sorted(self.waiting):
            if kind == "search":
                actions.append(Search(key))
            elif kind == "render":
                revid = next(p.revid for p in self.pages.values() if p.title == key)
                actions.append(Render(key, revid))
        return actions

    def _judge(self, page: Page, strict: bool) -> list[Action] | None:
        """Accept or reject ``page`` for each remaining taxonomy; ``None`` while its rendered ranks
        are needed."""
        code = parse(page.wikitext or "")
        ranks = wikitext_ranks(code)
        if strict and not has_higher_ranks(ranks):
            if page.title not in self.rendered:
                if page.revid is not None:
                    return None
                self.rendered[page.title] = {}
            ranks = {**ranks, **self.rendered[page.title]}
        self.evaluated.add(page.title)
        actions: list[Action] = []
        extract: Extract | None = None
        for taxon in list(self.taxa):
            verdict = ranks_agree(dict(zip(RANKS, taxon)), ranks)
            if verdict is True or (verdict is None and not strict):
                self.taxa.remove(taxon)
                extract = extract or describe(code)
                if extract:
                    actions.append(Found(taxon, page, extract))
                else:
                    actions.append(
                        Failed(
                            taxon,
                            NO_CONTENT,
                            f"{page.title}: no text in a keyword section or the lead",
                        )
                    )
            elif f"{page.title} ({_ranks_text(ranks)})" not in self.mismatches:
                self.mismatches.append(f"{page.title} ({_ranks_text(ranks)})")
        return actions

    def _advance(self) -> list[Action]:
        actions: list[Action] = []
        while self.taxa and self.cursor < len(self.candidates):
            title, via_search = self.candidates[self.cursor]
            page = self.pages.get(title)
            if page is None:
                return actions  # still being fetched
            if page.disambiguation:
                self.saw_disambiguation = True
            if page.is_article and page.title not in self.evaluated:
                judged = self._judge(page, strict=self.ambiguous or via_search)
                if judged is None:
                    # Later candidates can arrive in the same batch and come back here while the
                    # render is on its way: ask for it once.
                    if ("render", page.title) in self.waiting:
                        return actions
                    self.waiting.add(("render", page.title))
                    return actions + [Render(page.title, page.revid)]
                actions.extend(judged)
            self.cursor += 1
        if not self.taxa:
            return actions
        if not self.searched:
            self.searched = True
            query = clean_title(self.binomial) or " ".join(self.binomial.split())
            self.waiting.add(("search", query))
            return actions + [Search(query)]
        if self.mismatches:
            reason, detail = TAXONOMY_MISMATCH, "candidates: " + "; ".join(self.mismatches)
        elif self.saw_disambiguation:
            reason, detail = DISAMBIGUATION_ONLY, "only disambiguation pages matched the name"
        else:
            reason, detail = NOT_FOUND, "no page by this title and no search hit"
        actions.extend(Failed(t, reason, detail) for t in self.taxa)
        self.taxa = []
        return actions
