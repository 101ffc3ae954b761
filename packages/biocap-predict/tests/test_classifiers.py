"""pybioclip's classes, on the toy: same arguments, same rows, answers equal to the Predictor's."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from biocap_predict import (
    CustomLabelsBinningClassifier,
    CustomLabelsClassifier,
    Rank,
    TreeOfLifeClassifier,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_kwargs(trained_checkpoint) -> dict:
    return {"model_str": "BioCAP-toy", "pretrained_str": str(trained_checkpoint), "device": "cpu"}


def test_tree_of_life_classifier_rows_match_pybioclip(
    model_kwargs, toy_index, toy_predictor, zeroshot_images
):
    image = str(zeroshot_images[0][0])
    classifier = TreeOfLifeClassifier(index=toy_index, **model_kwargs)
    family = classifier.predict(image, Rank.FAMILY, k=2)
    assert [list(r) for r in family] == [
        ["file_name", "kingdom", "phylum", "class", "order", "family", "score"]
    ] * 2
    species = classifier.predict([image], Rank.SPECIES, k=1)[0]
    assert list(species)[-4:] == ["species_epithet", "species", "common_name", "score"]
    expected = toy_predictor.predict([image], rank="species", k=1)[0]
    assert species["species"] == expected["species"] and species["score"] == pytest.approx(
        expected["score"]
    )
    labels = classifier.get_label_data()
    keep = classifier.create_taxa_filter(Rank.ORDER, [labels["order"][0]])
    classifier.apply_filter(keep)
    assert {r["order"] for r in classifier.predict([image], Rank.SPECIES, k=10)} == {
        labels["order"][0]
    }
    with pytest.raises(ValueError, match="Unknown order received: Nosuchales"):
        classifier.create_taxa_filter(Rank.ORDER, ["Nosuchales"])


def test_custom_label_and_binning_classifiers(model_kwargs, zeroshot_images):
    images = [str(p) for p, _ in zeroshot_images[:2]]
    labels = CustomLabelsClassifier(
        ["red crawler", "blue sprout", "green cap"], **model_kwargs
    ).predict(images)
    assert len(labels) == 2 * 3 and set(labels[0]) == {"file_name", "classification", "score"}
    binned = CustomLabelsBinningClassifier(
        {"red crawler": "warm", "blue sprout": "cold", "green cap": "cold"}, **model_kwargs
    ).predict(images, k=1)
    assert [r["file_name"] for r in binned] == images and {r["classification"] for r in binned} <= {
        "warm",
        "cold",
    }
    with pytest.raises(ValueError, match="Empty"):
        CustomLabelsBinningClassifier({"red crawler": ""}, **model_kwargs)


@pytest.fixture
def tree(model_kwargs, toy_index) -> TreeOfLifeClassifier:
    return TreeOfLifeClassifier(index=toy_index, **model_kwargs)


def test_apply_filter_refuses_a_mask_of_the_wrong_length_or_all_false(tree, n_species):
    with pytest.raises(ValueError, match=f"containing {n_species} items"):
        tree.apply_filter([False, True])
    with pytest.raises(ValueError, match="keeps no taxon"):
        tree.apply_filter(np.zeros(n_species, dtype=bool))
    tree.apply_filter(tree.create_taxa_filter(Rank.KINGDOM, tree.get_label_data().kingdom[:1]))
    with pytest.raises(
        ValueError, match=f"containing {n_species} items"
    ):  # still the whole index's length
        tree.apply_filter([True] * len(tree.get_current_txt_names()))


def test_masks_built_from_label_data_select_the_named_taxa_after_a_filter(tree, photo, n_species):
    """pybioclip's idiom, ``apply_filter(df.species == name)``, names the same taxon whatever was
    filtered before: get_label_data() always lists the whole index, in order."""
    labels = tree.get_label_data()
    target = photo["others"][0]
    first = labels.species[labels.species != target].iloc[0]
    tree.apply_filter(labels.species == first)
    labels = tree.get_label_data()
    assert len(labels) == n_species and labels.species[labels.species != target].iloc[0] == first
    tree.apply_filter(labels.species == target)
    (row,) = tree.predict(str(photo["path"]), Rank.SPECIES, k=3)
    assert row["species"] == target and row["score"] == pytest.approx(1.0)
    both = tree.create_taxa_filter(Rank.SPECIES, [first]) | tree.create_taxa_filter(
        Rank.SPECIES, [target]
    )
    tree.apply_filter(both)
    assert {r["species"] for r in tree.predict(str(photo["path"]), Rank.SPECIES, k=5)} == {
        first,
        target,
    }
    tree.apply_filter(~both)
    assert len(tree.predict(str(photo["path"]), Rank.SPECIES, k=n_species)) == n_species - 2


def test_create_taxa_filter_is_a_numpy_mask_matched_exactly(tree, photo):
    mask = tree.create_taxa_filter(Rank.SPECIES, [photo["scientific"]])
    assert mask.dtype == np.bool_ and mask.sum() == 1
    with pytest.raises(ValueError, match="Unknown species received"):
        tree.create_taxa_filter(Rank.SPECIES, [photo["scientific"].upper()])


def test_min_prob_sums_only_the_species_above_it(tree, toy_predictor, zeroshot_images, n_species):
    """Higher ranks sum the species above ``min_prob`` and list only the groups that have one."""
    images = [str(p) for p, _ in zeroshot_images[:4]]
    species = pl.DataFrame(toy_predictor.predict(images, rank="species", k=n_species))
    # thresholds from the scores themselves, so the test holds for a weak model as for a strong one:
    # every species, the top quarter, and only the best species of all (each threshold halfway
    # between two scores, never on one)
    scores = species["score"].sort(descending=True).to_list()
    quarter = len(scores) // 4
    thresholds = (1e-9, (scores[quarter] + scores[quarter + 1]) / 2, (scores[0] + scores[1]) / 2)
    heights = {}
    for min_prob in thresholds:
        expected = (
            species.filter(pl.col("score") > min_prob)
            .group_by("file_name", "kingdom", "phylum", "class", "order", "family", "genus")
            .agg(pl.col("score").sum())
            .sort("file_name", "score", descending=[False, True])
        )
        rows = pl.DataFrame(tree.predict(images, Rank.GENUS, min_prob=min_prob, k=n_species))
        rows = rows.sort("file_name", "score", descending=[False, True])
        assert rows.height == expected.height
        assert rows.select(expected.columns[:-1]).equals(expected.select(expected.columns[:-1]))
        np.testing.assert_allclose(rows["score"], expected["score"], atol=1e-6)
        heights[min_prob] = rows.height
    low, mid, high = thresholds
    assert heights[low] > heights[mid] > heights[high] == 1


def test_callback_reports_each_batch_and_replaces_the_progress_bar(
    model_kwargs, zeroshot_images, capsys
):
    images = [str(p) for p, _ in zeroshot_images[:3]]
    classifier = CustomLabelsClassifier(["red crawler", "blue sprout"], **model_kwargs)
    calls = []
    classifier.predict(
        images, batch_size=2, callback=lambda done, total: calls.append((done, total))
    )
    assert calls == [(2, 3), (3, 3)]
    assert "3/3" not in capsys.readouterr().err
    classifier.predict(images, batch_size=2)
    assert "3/3" in capsys.readouterr().err  # the tqdm bar, by default


def test_classifiers_are_modules_whose_forward_has_gradients(tree, photo, n_species):
    """pybioclip's Grad-CAM notebook: probabilities from preprocessed pixels, differentiable."""
    assert isinstance(tree, torch.nn.Module) and tree.model is tree.predictor.model
    pixels = tree.preprocess(tree.ensure_rgb_image(str(photo["path"])))[None].requires_grad_()
    probs = tree(pixels)
    assert probs.shape == (1, n_species) and float(probs.detach().sum()) == pytest.approx(
        1.0, abs=1e-5
    )
    best = int(probs.argmax())
    assert tree.get_label_data().species[best] == photo["scientific"]
    probs[0, best].backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0


def test_a_recorder_receives_every_prediction(tree, photo):
    class Recorder:  # pybioclip's PredictionRecorder's interface
        def __init__(self):
            self.calls = []

        def add_prediction(self, images, **settings):
            self.calls.append((images, settings))

    recorder = Recorder()
    tree.set_recorder(recorder)
    tree.predict(str(photo["path"]), Rank.GENUS, k=2, batch_size=4)
    assert recorder.calls == [
        ([str(photo["path"])], {"rank": "genus", "min_prob": 1e-9, "k": 2, "batch_size": 4})
    ]
