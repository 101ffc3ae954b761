"""The check before training that the data can serve the run: every source's first samples carry
the texts the run's steps train on and have decodable images.

Without it, a text type that the data lacks (TreeOfLife-10M shards have no caption.txt) would make
the data workers skip every sample of the steps that need it, and validation would fail only after
the first epoch.
"""

from __future__ import annotations

from biocap_core.errors import ShardError
from biocap_core.preprocess import decode_image
from biocap_core.shards import expand_sources, iter_samples
from biocap_core.taxonomy import TRAIN_TAXONOMIC_TYPES

from biocap_train.bad_data import CAPTIONS_FIX, DataUnusable
from biocap_train.config import TrainConfig
from biocap_train.samples import IMAGE_MEMBERS, describe_shards, image_bytes, sample_text
from biocap_train.schedule import text_types_of_run

#: Samples of each source that the pre-flight check reads.
PREFLIGHT_SAMPLES = 64


def preflight(urls: list[str], candidates: tuple[str, ...]) -> tuple[str, set[str]]:
    """Read the first :data:`PREFLIGHT_SAMPLES` samples of one source (its first readable shard)
    before training: (a description of them, the ``candidates`` text types at least one of them
    carries).

    The caller refuses a run whose steps need a text type they lack; otherwise the stream would
    skip every sample of those steps. Raises :class:`DataUnusable` if nothing can be read or no
    image decodes.
    """
    samples, errors, tried = [], [], urls[:3]
    for url in tried:
        try:
            for sample in iter_samples(url):
                samples.append(sample)
                if len(samples) == PREFLIGHT_SAMPLES:
                    break
        except (ShardError, OSError) as exc:
            errors.append(f"{exc} ({type(exc).__name__})")
        if samples:
            break
    if not samples:
        why = errors[0] if errors else "they hold no samples"
        if len(errors) > 1:
            why += f" (and {len(errors) - 1} more error(s) like it)"
        raise DataUnusable(f"no sample could be read from {describe_shards(tried)}: {why}")
    where = f"the first {len(samples)} samples of {samples[0]['__url__']}"
    if not any(_decodes(s) for s in samples):
        raise DataUnusable(f"none of {where} has a decodable image ({'/'.join(IMAGE_MEMBERS)} "
                           "member)")
    return where, {t for t in candidates if any(sample_text(s, t, None) for s in samples)}


def _decodes(sample: dict) -> bool:
    data = image_bytes(sample)
    if data is None:
        return False
    try:
        decode_image(data)
    except Exception:  # PIL raises many types for bad bytes
        return False
    return True


def check_data(cfg: TrainConfig) -> None:
    """Refuse, before any model is built, a run that the data cannot serve (see the module
    docstring), saying what is missing and how to fix it."""
    needs = [t for t in text_types_of_run(cfg.text_type, cfg.caption_share, cfg.joint_loss)
             if not (t == "caption" and cfg.captions)]
    for urls in _sources(cfg.train_data):
        where, carried = _preflight(urls, tuple(needs), "--train-data")
        missing = [t for t in needs if t not in carried]
        if "caption" in missing:
            need = "--joint-loss" if cfg.joint_loss else f"--text-type {cfg.text_type}"
            if cfg.text_type == "random" and not cfg.joint_loss:
                need += f" (its caption steps, --caption-share {cfg.caption_share:.3g})"
            raise DataUnusable(
                f"--train-data: none of {where} has caption.txt, which {need} needs: "
                + CAPTIONS_FIX)
        if missing:
            have = sorted(t for t in carried if t != "caption")
            raise DataUnusable(
                f"--train-data: none of {where} has {', '.join(t + '.txt' for t in missing)}, "
                f"which --text-type {cfg.text_type} trains on; "
                + (f"they have {', '.join(have)}: use one of those as --text-type" if have
                   else "these are not TreeOfLife shards with taxonomic texts"))
    if cfg.val_data:
        needs = TRAIN_TAXONOMIC_TYPES + (() if cfg.captions else ("caption",))
        for urls in _sources(cfg.val_data):
            where, carried = _preflight(urls, needs, "--val-data")
            missing = [t for t in needs if t not in carried]
            if missing:
                fix = ("pass --captions TABLE.parquet with their captions, or leave out --val-data"
                       if "caption" in missing else "leave out --val-data")
                raise DataUnusable(
                    f"--val-data: none of {where} has {', '.join(t + '.txt' for t in missing)}; "
                    f"validation scores the caption and every taxonomic text type: {fix}")


def _sources(spec: str) -> list[list[str]]:
    """The shard lists of the '::'-joined sources of ``spec``: each source may differ in its
    members."""
    return [expand_sources(source)[0] for source in spec.split("::") if source.strip()]


def _preflight(urls: list[str], needs: tuple[str, ...], flag: str) -> tuple[str, set[str]]:
    try:
        return preflight(urls, needs)
    except DataUnusable as exc:
        raise DataUnusable(f"{flag}: {exc}") from None
