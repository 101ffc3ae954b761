"""Raw samples to micro-batches: image prepared, texts of the step tokenized, bad samples skipped.

A batch carries what its step trains on (:class:`~biocap_train.schedule.StepText`), drawn where
the batch is made, so the trainer and the loss read it off the batch instead of drawing it again.
Data that can never serve a step must not make a stream spin forever: :class:`BatchMaker` gives up
with :class:`~biocap_train.bad_data.DataUnusable` after :data:`MAX_UNUSABLE_IN_A_ROW` skipped
samples in a row, saying what is missing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from biocap_train.bad_data import CAPTIONS_FIX, DataCounts, DataUnusable
from biocap_train.captions import CaptionIndex
from biocap_train.image_prep import ImagePrep
from biocap_train.samples import IMAGE_MEMBERS, describe_shards, image_bytes, sample_text
from biocap_train.schedule import StepText

#: Skipped samples in a row after which a stream gives up. Without a bound, data that lacks the
#: step's text (TreeOfLife-10M shards have no caption.txt) or whose images all fail to decode
#: makes a worker loop forever at full CPU with nothing printed. Large enough that a gap in a
#: partial --captions table or a run of bad images in otherwise good shards does not stop a run;
#: it takes seconds to reach.
MAX_UNUSABLE_IN_A_ROW = 10_000


@dataclass(kw_only=True)
class StreamCounts:
    """A stream's bad samples so far (:meth:`DataCounts.as_dict`) and which stream it is: the
    logical stream of a training epoch, or the worker of a validation pass. Sent alone by a
    validation worker whose last samples were all skipped, so no skipped sample goes unreported."""

    counts: dict[str, Any] = field(default_factory=dict)
    stream: int = 0


@dataclass(kw_only=True)
class Batch(StreamCounts):
    """One micro-batch.

    ``image``: what the run's :class:`~biocap_train.image_prep.ImagePrep` collated in the worker
    (with ``--gpu-decode`` the encoded images) until :meth:`prepare_images` makes it the model's
    input on the device. ``text``: the tokens of ``step_text.text_type``; ``caption_text``: when
    ``step_text.joint``, the captions'. ``index``: the micro-batch's number in the epoch;
    ``consumed``: raw samples its stream has read so far (where a resumed stream continues).
    """

    image: Any
    text: torch.Tensor
    step_text: StepText
    caption_text: torch.Tensor | None = None
    keys: list[str] = field(default_factory=list)
    index: int = 0
    consumed: int = 0

    def prepare_images(self, prep: ImagePrep, device: torch.device, dtype: torch.dtype
                       ) -> list[str]:
        """Make ``image`` the model's input on ``device``, in place; returns why any sample failed.

        With ``--gpu-decode`` a JPEG whose header and end marker look right can still be corrupt
        inside, and only the device's decode finds it. One such file must not stop a run: its
        sample (image, texts, key) is dropped, and the caller counts the reason as the workers
        count an undecodable image."""
        images, kept, failed = prep.apply(self.image, device, dtype)
        names = self.keys or [f"sample {i} of a batch" for i in range(len(self.text))]
        reasons = [f"{names[i]} (on the device): {why}" for i, why in failed]
        if images is None:
            raise DataUnusable(f"no image of a batch of {len(failed)} could be decoded on the "
                               f"device (e.g. {reasons[0]})")
        self.image = images
        if failed:
            self.keep_texts(kept)
        return reasons

    def keep_texts(self, positions) -> None:
        """Keep the texts and keys of the samples at ``positions`` only (the images are cut)."""
        positions = list(positions)
        self.text = self.text[positions]
        if self.caption_text is not None:
            self.caption_text = self.caption_text[positions]
        if self.keys:
            self.keys = [self.keys[i] for i in positions]

    def pin_memory(self) -> Batch:
        """What the DataLoader calls with ``pin_memory=True`` (CUDA), for a faster copy."""
        self.image, self.text = self.image.pin_memory(), self.text.pin_memory()
        if self.caption_text is not None:
            self.caption_text = self.caption_text.pin_memory()
        return self


class BatchMaker:
    """Turns raw samples into batches: prepare the image, tokenize the texts; skips and counts bad
    samples, and gives up after :data:`MAX_UNUSABLE_IN_A_ROW` skipped samples in a row."""

    def __init__(self, prep: ImagePrep, tokenizer: Callable, captions: CaptionIndex | None,
                 counts: DataCounts):
        self.prep, self.tokenizer, self.captions, self.counts = prep, tokenizer, captions, counts
        self._run: Counter = Counter()  # (kind, text type) of the skips since the last usable one
        self._run_shards: set[str] = set()
        self._run_example = ""

    def example(self, sample: dict, text_types: tuple[str, ...]):
        """(prepared image, texts) of one sample, or None if it must be skipped."""
        key = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
        texts = [sample_text(sample, t, self.captions) for t in text_types]
        if any(t is None for t in texts):
            missing = [tt for tt, t in zip(text_types, texts, strict=True) if t is None]
            return self._skip(sample, "no_text", f"{key} has no {missing[0]} text", missing[0])
        data = image_bytes(sample)
        if data is None:
            return self._skip(sample, "no_image", f"{key} has no image member")
        try:
            image = self.prep.encode(data)
        except Exception as exc:  # PIL raises many types for bad bytes
            return self._skip(sample, "corrupt_image", f"{key}: {type(exc).__name__}: {exc}")
        self._run.clear()
        self._run_shards.clear()
        return image, texts

    def _skip(self, sample: dict, kind: str, detail: str, text_type: str | None = None) -> None:
        self.counts.add(kind, detail)
        if not self._run:
            self._run_example = detail[:300]
        self._run[kind, text_type] += 1
        self._run_shards.add(sample.get("__url__", "?"))
        if self._run.total() >= MAX_UNUSABLE_IN_A_ROW:
            raise DataUnusable(self._explain())
        return None

    def _explain(self) -> str:
        """What the skipped run of samples lacked, and how to fix it."""
        (kind, text_type), _ = self._run.most_common(1)[0]
        where = describe_shards(self._run_shards)
        head = (f"{MAX_UNUSABLE_IN_A_ROW} samples in a row could not be used, so no batch can be "
                "made: ")
        if kind == "no_text" and text_type == "caption" and self.captions is not None:
            return head + (f"no sample read from {where} has a caption in the --captions table "
                           f"{self.captions.meta.get('source')}; its uuid column must hold the "
                           f"shards' sample keys (e.g. {self._run_example})")
        if kind == "no_text" and text_type == "caption":
            return head + f"no sample read from {where} has caption.txt: " + CAPTIONS_FIX
        if kind == "no_text":
            return head + (f"no sample read from {where} has {text_type}.txt: choose a "
                           "--text-type these shards carry")
        if kind == "no_image":
            return head + (f"no sample read from {where} has an image member "
                           f"({'/'.join(IMAGE_MEMBERS)})")
        return head + f"no image read from {where} could be decoded (e.g. {self._run_example})"

    def collate(self, examples: list, keys: list[str], step_text: StepText, **stream) -> Batch:
        """The batch of ``examples`` (:meth:`example`'s) for a step of ``step_text``; ``stream``:
        the :class:`StreamCounts` and position fields of :class:`Batch`."""
        tokens = [self.tokenizer([e[1][j] for e in examples])
                  for j in range(len(step_text.members))]
        return Batch(image=self.prep.collate([e[0] for e in examples]), text=tokens[0],
                     caption_text=tokens[1] if step_text.joint else None, keys=keys,
                     step_text=step_text, **stream)
