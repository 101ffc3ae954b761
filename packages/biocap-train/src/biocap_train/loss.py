"""The BioCAP loss: OpenCLIP's ``ClipLoss`` of each trained head's image features against its texts.

A step trains the heads its batches name (:attr:`biocap_train.schedule.StepText.heads`): the head
of its text type (``tax`` for a taxonomic text, ``caption`` for a caption), with that head's
temperature; with ``--joint-loss`` both, the text batch holding the taxonomic texts followed by the
captions, and the caption loss weighted by ``--caption-loss-weight``.

``--caption-head`` says which image projector the caption head is: its own (``separate``,
``visual.caption_proj`` and ``logit_scale_caption``, BioCAP) or the taxonomic one (``shared``,
``visual.proj`` and ``logit_scale``: BioCLIP trained on captions as well), so the two-projector
design can be compared with one projector on the same data and schedule.
"""

from __future__ import annotations

import torch
from open_clip import ClipLoss

#: The model output holding each projector's temperature.
_SCALES = {"tax": "logit_scale", "caption": "logit_scale_caption"}
#: The model's image projector (a :data:`biocap_core.model.HEADS` name) behind each head, per
#: ``--caption-head``.
PROJECTORS = {
    "separate": {"tax": "tax", "caption": "caption"},
    "shared": {"tax": "tax", "caption": "tax"},
}


class HeadLosses:
    """The loss of each head and their weighted sum (``loss``) for :meth:`features`."""

    def __init__(
        self, clip_loss: ClipLoss, caption_weight: float = 1.0, caption_head: str = "separate"
    ):
        self.clip_loss, self.weights = clip_loss, {"tax": 1.0, "caption": caption_weight}
        self.projector = PROJECTORS[caption_head]

    def projectors(self, heads: tuple[str, ...]) -> tuple[str, ...]:
        """The model's image projectors that a step training ``heads`` computes (the ``heads``
        argument of :meth:`biocap_core.model.BioCAP.forward`)."""
        return tuple(dict.fromkeys(self.projector[h] for h in heads))

    def features(
        self, out: dict[str, torch.Tensor], heads: tuple[str, ...], n: int
    ) -> dict[str, torch.Tensor]:
        """``image_<head>`` and ``text_<head>`` features of a model output on ``n`` images and
        their texts."""
        feats = {f"image_{h}": out[f"image_features_{self.projector[h]}"] for h in heads}
        texts = out["text_features"].split(n) if len(heads) == 2 else (out["text_features"],)
        feats.update({f"text_{h}": t for h, t in zip(heads, texts)})
        return feats

    def __call__(
        self,
        feats: dict[str, torch.Tensor],
        out: dict[str, torch.Tensor],
        heads: tuple[str, ...],
        scale_grad: bool = True,
    ) -> dict[str, torch.Tensor]:
        """``scale_grad=False`` keeps the temperatures out of the gradient (all but one accumulated
        micro-batch, see :meth:`biocap_train.trainer.Trainer.train_step`)."""
        scales = {h: out[_SCALES[self.projector[h]]] for h in heads}
        if not scale_grad:
            scales = {h: s.detach() for h, s in scales.items()}
        losses = {
            h: self.clip_loss(feats[f"image_{h}"], feats[f"text_{h}"], scales[h]) for h in heads
        }
        losses["loss"] = sum(self.weights[h] * losses[h] for h in heads)
        return losses
