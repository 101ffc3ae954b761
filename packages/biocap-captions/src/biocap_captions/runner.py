"""One captioning job from its settings: the library call behind ``biocap-captions run``.

:func:`run` checks the output folders, turns the input into units and takes this
job's share of them (``num_jobs``/``job_index``, else a SLURM array), loads the wiki
descriptions and format examples, records the run's settings under ``OUT/runs/``,
starts the engine and runs the :class:`~biocap_captions.pipeline.Captioner`. Everything
that can be wrong with the input or the output folder fails before the engine
starts, since loading a 38B model takes minutes.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from biocap_core import schemas

from biocap_captions.engines import EngineSettings
from biocap_core.jobs import resolve_job, select
from biocap_captions.pipeline import Captioner, RunOptions, RunReport
from biocap_captions.prompt import PROMPT_VERSION, FormatExamples, PromptBuilder
from biocap_captions.sources import Unit, catalog_units, load_descriptions, shard_units
from biocap_captions.store import prepare_output, write_run_manifest

log = logging.getLogger("biocap_captions")


@dataclass(frozen=True)
class Inputs:
    """Where the samples come from, and what their prompts add to them."""

    #: TreeOfLife shards: brace pattern, ``::`` joins patterns.
    shards: str | None = None
    #: Catalog table: without ``shards`` its ``image_path`` rows are the input; it also carries the
    #: 7 ranks that species-level wiki descriptions are joined on.
    catalog: Path | None = None
    #: Folder ``image_path`` is relative to (default: the catalog's).
    image_root: Path | None = None
    rows_per_unit: int = 10_000
    #: ``uuid, description``, or species-level descriptions (needs ``catalog``).
    wiki: Path | None = None
    #: ``class, description`` table (default: the original's 347 classes).
    format_examples: Path | None = None
    max_wiki_chars: int = 600
    word_limit: int = 20

    def units(self, catalog: pl.DataFrame | None) -> list[Unit]:
        """All units of the input, in the order jobs split them."""
        if self.shards is not None:
            return shard_units(self.shards)
        if self.catalog is None or catalog is None:
            raise ValueError("give shards, or a catalog with an image_path column")
        return catalog_units(catalog, str(self.catalog), self.image_root or self.catalog.parent, self.rows_per_unit)


def run(inputs: Inputs, engine: EngineSettings, options: RunOptions,
        num_jobs: int | None = None, job_index: int | None = None) -> RunReport:
    """Caption every image of this job's units; a rerun skips finished units and finishes partial ones.

    Raises :class:`~biocap_core.errors.BioCAPError` for bad input, an output that cannot be written
    or an engine that cannot work, :class:`~biocap_core.jobs.JobSpecError` for an inconsistent
    job split, and ImportError for the vllm engine without vLLM.
    """
    prepare_output(options.out)
    if options.write_shards is not None:
        prepare_output(options.write_shards)
    jobs, index = resolve_job(num_jobs, job_index)
    catalog = schemas.CATALOG.read(inputs.catalog) if inputs.catalog else None
    units = inputs.units(catalog)
    mine = select(units, jobs, index)
    descriptions = load_descriptions(inputs.wiki, catalog, str(inputs.catalog)) if inputs.wiki else None
    prompts = PromptBuilder(FormatExamples.load(inputs.format_examples), inputs.max_wiki_chars, inputs.word_limit)
    log.info("job %d/%d: %d of %d units; prompt %s", index + 1, jobs, len(mine), len(units), PROMPT_VERSION)
    if not mine:
        return RunReport()
    write_run_manifest(options.out, {"argv": sys.argv, **engine.record(), "prompt_version": PROMPT_VERSION,
                                     "job": [index, jobs], "units": [u.name for u in mine]}, index, jobs)
    started = engine.build()
    try:
        return Captioner(started, prompts, options, descriptions).run(mine)
    finally:
        started.close()
