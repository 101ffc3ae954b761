"""What each optimisation step does: which text supervises it, and its learning rate.

Both are pure functions of the global step, so every rank, every data worker
and a resumed run compute the same answer without talking to each other.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from biocap_core.taxonomy import TRAIN_TAXONOMIC_TYPES


def step_rng(seed: int, step: int, purpose: str = "text") -> random.Random:
    """A generator seeded by the run seed and the global step only."""
    return random.Random(f"{seed}/{purpose}/{step}")


def text_type_for_step(step: int, seed: int, text_type: str = "random", caption_share: float = 1 / 6,
                       joint: bool = False) -> str:
    """The text type of global step ``step``, the same on every rank.

    ``random``: ``caption`` with probability ``caption_share``, otherwise one of
    the five taxonomic types uniformly (with the default share of 1/6 this is the
    original's uniform draw over six types). With ``joint`` the caption head is
    trained every step anyway, so only the taxonomic type is drawn.
    """
    if text_type != "random":
        return text_type
    rng = step_rng(seed, step)
    if not joint and rng.random() < caption_share:
        return "caption"
    return rng.choice(TRAIN_TAXONOMIC_TYPES)


def text_types_of_run(text_type: str = "random", caption_share: float = 1 / 6, joint: bool = False) -> tuple[str, ...]:
    """Every text type some step of such a run may train on: what the data must carry.

    ``random`` can draw any taxonomic type, and ``caption`` unless ``caption_share`` is 0; ``joint`` adds
    the caption to every step and never draws it as the step's own type.
    """
    if text_type != "random":
        return (text_type, "caption") if joint else (text_type,)
    types = TRAIN_TAXONOMIC_TYPES if caption_share < 1 or joint else ()
    return types + ("caption",) if joint or caption_share > 0 else types


def val_text_type(batch_index: int, seed: int) -> str:
    """The taxonomic text type of a validation batch (the original seeds it with the batch index)."""
    return step_rng(seed, batch_index, "val").choice(TRAIN_TAXONOMIC_TYPES)


def head_trained_by(text_type: str) -> str:
    """The image head that texts of ``text_type`` train: ``caption`` or ``tax``."""
    return "caption" if text_type == "caption" else "tax"


@dataclass(frozen=True)
class StepText:
    """What one step trains on: drawn once, where the step's batches are made, and carried on them
    to the trainer and the loss.

    ``text_type``: the text every sample gives (a taxonomic type or ``caption``). ``joint``
    (``--joint-loss``, and validation): each sample gives its caption as well, and both heads train.
    """

    text_type: str
    joint: bool = False

    @property
    def members(self) -> tuple[str, ...]:
        """The text types each sample must carry, in the order the batch holds their tokens."""
        return (self.text_type, "caption") if self.joint else (self.text_type,)

    @property
    def heads(self) -> tuple[str, ...]:
        """The image heads the step trains: the one its text type trains, or both when ``joint``."""
        return ("tax", "caption") if self.joint else (head_trained_by(self.text_type),)


@dataclass(frozen=True)
class TextSchedule:
    """A run's rule for the text of each step (``--seed``, ``--text-type``, ``--caption-share``,
    ``--joint-loss``); small and picklable, so each data worker draws the text of its batches."""

    seed: int
    text_type: str = "random"
    caption_share: float = 1 / 6
    joint: bool = False

    def at(self, step: int) -> StepText:
        """What global step ``step`` trains on (:func:`text_type_for_step`)."""
        drawn = text_type_for_step(step, self.seed, self.text_type, self.caption_share, self.joint)
        return StepText(drawn, self.joint)


def learning_rate(step: int, base_lr: float, warmup: int, total_steps: int, kind: str = "cosine") -> float:
    """OpenCLIP's schedule: linear warm-up from base/warmup, then cosine to 0 (or constant)."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if kind == "const":
        return base_lr
    if kind != "cosine":
        raise ValueError(f"unknown --lr-scheduler {kind!r}")
    decay_steps = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / decay_steps)
    return 0.5 * (1 + math.cos(math.pi * progress)) * base_lr
