"""pybioclip's classes, on the toy: same arguments, same rows, answers equal to the Predictor's."""

from __future__ import annotations

import pytest

from biocap_predict import CustomLabelsBinningClassifier, CustomLabelsClassifier, Rank, TreeOfLifeClassifier

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_kwargs(trained_checkpoint) -> dict:
    return {"model_str": "BioCAP-toy", "pretrained_str": str(trained_checkpoint), "device": "cpu"}


def test_tree_of_life_classifier_rows_match_pybioclip(model_kwargs, toy_index, toy_predictor, zeroshot_images):
    image = str(zeroshot_images[0][0])
    classifier = TreeOfLifeClassifier(index=toy_index, **model_kwargs)
    family = classifier.predict(image, Rank.FAMILY, k=2)
    assert [list(r) for r in family] == [["file_name", "kingdom", "phylum", "class", "order", "family", "score"]] * 2
    species = classifier.predict([image], Rank.SPECIES, k=1)[0]
    assert list(species)[-4:] == ["species_epithet", "species", "common_name", "score"]
    expected = toy_predictor.predict([image], rank="species", k=1)[0]
    assert species["species"] == expected["species"] and species["score"] == pytest.approx(expected["score"])
    labels = classifier.get_label_data()
    keep = classifier.create_taxa_filter(Rank.ORDER, [labels["order"][0]])
    classifier.apply_filter(keep)
    assert {r["order"] for r in classifier.predict([image], Rank.SPECIES, k=10)} == {labels["order"][0]}
    with pytest.raises(ValueError, match="unknown order"):
        classifier.create_taxa_filter(Rank.ORDER, ["Nosuchales"])


def test_custom_label_and_binning_classifiers(model_kwargs, zeroshot_images):
    images = [str(p) for p, _ in zeroshot_images[:2]]
    labels = CustomLabelsClassifier(["red crawler", "blue sprout", "green cap"], **model_kwargs).predict(images)
    assert len(labels) == 2 * 3 and set(labels[0]) == {"file_name", "classification", "score"}
    binned = CustomLabelsBinningClassifier({"red crawler": "warm", "blue sprout": "cold", "green cap": "cold"},
                                           **model_kwargs).predict(images, k=1)
    assert [r["file_name"] for r in binned] == images and {r["classification"] for r in binned} <= {"warm", "cold"}
    with pytest.raises(ValueError, match="Empty"):
        CustomLabelsBinningClassifier({"red crawler": ""}, **model_kwargs)
