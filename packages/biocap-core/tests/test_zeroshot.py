"""Shared zero-shot pieces: class order, template averaging, top-k and per-class recall."""

from __future__ import annotations

import polars as pl
import pytest
import torch
import torch.nn.functional as F

from biocap_core.errors import SchemaError
from biocap_core.model import build_model
from biocap_core.zeroshot import (
    ClassificationSet,
    classifier_weights,
    encode_images,
    per_class_recall,
    topk_accuracy,
)


def test_set_from_each_toy_layout(toy_dir):
    root = toy_dir / "zeroshot"
    asis = ClassificationSet.from_csv(root / "metadata.csv", root, "asis")
    taxon = ClassificationSet.from_csv(root / "camera_trap.csv", root, "taxon_com")
    assert len(asis.paths) == len(taxon.paths) == 48 and len(asis.classnames) == 12
    assert asis.labels == taxon.labels  # same images, same first-appearance class order
    assert asis.classnames[0].count(" ") == 1  # "Genus species"


def test_missing_images_error_or_skip(toy_dir, tmp_path):
    root = toy_dir / "zeroshot"
    table = pl.read_csv(root / "metadata.csv")
    table = pl.concat(
        [table, pl.DataFrame({"": [99], "filepath": ["images/nope.jpg"], "class": ["X y"]})]
    )
    csv = tmp_path / "m.csv"
    table.write_csv(csv)
    with pytest.raises(SchemaError, match=r"m.csv: 1 of 49 image\(s\) missing.*nope.jpg"):
        ClassificationSet.from_csv(csv, root, "asis")
    kept = ClassificationSet.from_csv(csv, root, "asis", skip_missing=True)
    assert len(kept.paths) == 48 and kept.skipped == [str(root / "images/nope.jpg")]


def test_classifier_weights_average_normalised_templates(tiny_cfg):
    model = build_model(tiny_cfg).eval()
    templates = ["a photo of {}.", "a drawing of a {}."]
    w = classifier_weights(model, ["Aa bb", "Cc dd", "Ee ff"], templates, batch_size=4)
    tok = model.tokenizer()
    with torch.no_grad():
        manual = torch.stack(
            [
                F.normalize(
                    model.encode_text(tok([t.format(c) for t in templates]), normalize=True).mean(
                        0
                    ),
                    dim=0,
                )
                for c in ["Aa bb", "Cc dd", "Ee ff"]
            ]
        ).T
    assert w.shape == (32, 3) and torch.allclose(w, manual, atol=1e-5)


def test_encode_images_matches_the_model_on_preprocessed_images(tiny_cfg, toy_dir):
    model = build_model(tiny_cfg).eval()
    data = ClassificationSet.from_csv(
        toy_dir / "zeroshot" / "metadata.csv", toy_dir / "zeroshot", "asis"
    )
    feats = encode_images(model, data.paths[:5], head="caption", batch_size=2)
    from biocap_core.preprocess import decode_image, image_transform

    t = image_transform(model, train=False)
    with torch.no_grad():
        direct = model.encode_image(
            torch.stack([t(decode_image(p)) for p in data.paths[:5]]),
            normalize=True,
            head="caption",
        )
    assert torch.allclose(feats, direct, atol=1e-5)


def test_topk_and_recall_against_brute_force():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 7, generator=g)
    labels = torch.randint(0, 6, (200,), generator=g)  # class 6 never occurs
    acc = topk_accuracy(logits, labels, ks=(1, 3, 10))
    for k, value in acc.items():
        brute = (
            sum(
                int(labels[i]) in sorted(range(7), key=lambda c: -logits[i, c])[:k]
                for i in range(200)
            )
            / 200
        )
        assert value == pytest.approx(brute)
    assert acc[10] == 1.0
    recall = per_class_recall(logits, labels, 7)
    for c in range(6):
        idx = (labels == c).nonzero().flatten()
        assert recall[c].item() == pytest.approx((logits[idx].argmax(1) == c).float().mean().item())
    assert torch.isnan(recall[6])
