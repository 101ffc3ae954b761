"""What the trainer measures besides its training loss: the validation loss and zero-shot top-1.

Both run on rank 0, in eval mode (:func:`biocap_core.zeroshot.eval_mode`: no dropout), and hand
the model back in training mode.
"""

from __future__ import annotations

from pathlib import Path

import torch
from open_clip import ClipLoss

from biocap_core.precision import autocast, input_dtype
from biocap_core.shards import expand_sources
from biocap_core.taxonomy import TEMPLATES
from biocap_core.zeroshot import (
    ClassificationSet,
    classifier_weights,
    encode_images,
    eval_mode,
    topk_accuracy,
)
from biocap_train.bad_data import DataCounts
from biocap_train.batches import Batch
from biocap_train.captions import CaptionIndex
from biocap_train.config import TrainConfig
from biocap_train.image_prep import image_prep
from biocap_train.loss import HeadLosses
from biocap_train.streams import ValStream, loader


def zeroshot_set(cfg: TrainConfig) -> ClassificationSet | None:
    """The ``--zeroshot-data`` set (images under ``--zeroshot-images``, else beside the CSV), if
    given."""
    if not cfg.zeroshot_data:
        return None
    root = cfg.zeroshot_images or str(Path(cfg.zeroshot_data).parent)
    return ClassificationSet.from_csv(cfg.zeroshot_data, root, cfg.zeroshot_label_type)


def zeroshot_top1(
    model, dataset: ClassificationSet, cfg: TrainConfig, device: torch.device
) -> float:
    """Top-1 of the taxonomic head on a zero-shot classification set (the original's protocol)."""
    feats = encode_images(
        model, dataset.paths, head="tax", batch_size=256, device=device, precision=cfg.precision
    )
    weights = classifier_weights(
        model,
        dataset.classnames,
        TEMPLATES[: cfg.zeroshot_templates],
        device=device,
        precision=cfg.precision,
    )
    return topk_accuracy(feats @ weights, torch.tensor(dataset.labels), ks=(1,))[1]


@torch.no_grad()
def validation_loss(
    model, cfg: TrainConfig, captions: CaptionIndex | None, device: torch.device
) -> tuple[dict[str, float], DataCounts]:
    """Mean taxonomic and caption CLIP loss over every ``--val-data`` sample (one process), their
    mix at ``--caption-share`` as ``loss``, and the validation samples skipped as bad."""
    urls, _ = expand_sources(cfg.val_data)
    prep = image_prep(cfg, model, train=False)
    stream = ValStream(urls, cfg.batch_size, cfg.seed, prep, model.tokenizer(), captions)
    losses = HeadLosses(ClipLoss(), caption_head=cfg.caption_head)
    dtype = input_dtype(cfg.precision)
    totals, n = {"tax": 0.0, "caption": 0.0}, 0
    counts = {}  # worker -> its skipped samples so far
    on_device = DataCounts()  # --gpu-decode: JPEGs that only the device found undecodable
    with eval_mode(model):
        for batch in loader(stream, min(cfg.workers, len(urls))):
            counts[batch.stream] = batch.counts
            if not isinstance(batch, Batch):  # a worker's last skips, with no batch
                continue
            for detail in batch.prepare_images(prep, device, dtype):
                on_device.add("corrupt_image", detail)
            size, heads = len(batch.image), batch.step_text.heads
            with autocast(device, cfg.precision, inputs_cast=True):
                out = model(batch.image, torch.cat([batch.text, batch.caption_text]).to(device))
                batch_losses = losses(losses.features(out, heads, size), out, heads)
            for h in heads:
                totals[h] += batch_losses[h].item() * size
            n += size
    problems = DataCounts.merge([*counts.values(), on_device])
    if n == 0:
        raise ValueError(
            f"--val-data {cfg.val_data}: no readable validation samples ({problems.summary()})"
        )
    result = {f"loss_{h}": v / n for h, v in totals.items()}
    result["loss"] = (1 - cfg.caption_share) * result["loss_tax"] + cfg.caption_share * result[
        "loss_caption"
    ]
    result["samples"] = n
    return result, problems
