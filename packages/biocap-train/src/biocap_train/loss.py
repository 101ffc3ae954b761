"""The BioCAP loss: OpenCLIP's ``ClipLoss`` of each trained head's image features against its texts.

A step trains the heads its batches name (:attr:`biocap_train.schedule.StepText.heads`): the head
of its text type (``tax`` for a taxonomic text, ``caption`` for a caption), with that head's
temperature; with ``--joint-loss`` both, the text batch holding the taxonomic texts followed by the
captions, and the caption loss weighted by ``--caption-loss-weight``.
"""

from __future__ import annotations

import torch
from open_clip import ClipLoss

#: The model output holding each head's temperature.
_SCALES = {"tax": "logit_scale", "caption": "logit_scale_caption"}


def head_features(out: dict[str, torch.Tensor], heads: tuple[str, ...], n: int) -> dict[str, torch.Tensor]:
    """``image_<head>`` and ``text_<head>`` features of a model output on ``n`` images and their texts."""
    feats = {f"image_{h}": out[f"image_features_{h}"] for h in heads}
    texts = out["text_features"].split(n) if len(heads) == 2 else (out["text_features"],)
    feats.update({f"text_{h}": t for h, t in zip(heads, texts)})
    return feats


class HeadLosses:
    """The loss of each head and their weighted sum (``loss``) for :func:`head_features`."""

    def __init__(self, clip_loss: ClipLoss, caption_weight: float = 1.0):
        self.clip_loss, self.weights = clip_loss, {"tax": 1.0, "caption": caption_weight}

    def __call__(self, feats: dict[str, torch.Tensor], out: dict[str, torch.Tensor], heads: tuple[str, ...],
                 scale_grad: bool = True) -> dict[str, torch.Tensor]:
        """``scale_grad=False`` keeps the temperatures out of the gradient (all but one accumulated
        micro-batch, see :meth:`biocap_train.trainer.Trainer.train_step`)."""
        scales = {h: out[_SCALES[h]] if scale_grad else out[_SCALES[h]].detach() for h in heads}
        losses = {h: self.clip_loss(feats[f"image_{h}"], feats[f"text_{h}"], scales[h]) for h in heads}
        losses["loss"] = sum(self.weights[h] * losses[h] for h in heads)
        return losses
