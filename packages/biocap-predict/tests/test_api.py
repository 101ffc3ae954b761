"""The Python API on the toy tree of life: open-ended predictions, every rank at once, subsets,
custom labels and bins, stored embeddings, trait captions and bad input."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
import torch
from PIL import Image

from biocap_core.model import build_model
from biocap_core.preprocess import image_transform
from biocap_predict import Predictor, TaxaIndex
from biocap_predict import index as index_module
from biocap_predict.errors import ImageError, PredictInputError, TaxaIndexError
from biocap_predict.rows import TAXON_COLUMNS

MODEL = "BioCAP-toy"

pytestmark = pytest.mark.slow


def test_open_ended_prediction_names_the_right_species_well_above_chance(toy_predictor, zeroshot_images, n_species):
    rows = toy_predictor.predict([p for p, _ in zeroshot_images], rank="species", k=3)
    assert all(tuple(r) == TAXON_COLUMNS for r in rows)
    by_image = defaultdict(list)
    for r in rows:
        by_image[r["file_name"]].append(r["species"])
    assert list(by_image) == [str(p) for p, _ in zeroshot_images]
    top3 = np.mean([truth in by_image[str(p)] for p, truth in zeroshot_images])
    chance = 3 / n_species  # 64 species, 256 images: 0.047, sd 0.013; the demo's model gets about 0.3
    assert top3 >= 3 * chance, f"top-3 accuracy {top3:.2f}; chance is {chance:.2f}"


def test_every_rank_at_once_is_consistent(toy_predictor, zeroshot_images):
    """With k covering every taxon: each rank's scores sum to 1 and a genus scores the sum of its species."""
    images = [p for p, _ in zeroshot_images[:5]]
    rows = toy_predictor.predict(images, rank="all", k=100)
    totals, species_sum, genus = defaultdict(float), defaultdict(float), {}
    for r in rows:
        totals[r["file_name"], r["rank"]] += r["score"]
        if r["rank"] == "species":
            species_sum[r["file_name"], r["genus"]] += r["score"]
        elif r["rank"] == "genus":
            genus[r["file_name"], r["genus"]] = r["score"]
    assert set(totals.values()) and all(v == pytest.approx(1, abs=1e-5) for v in totals.values())
    assert genus.keys() == species_sum.keys()
    assert all(genus[key] == pytest.approx(species_sum[key], abs=1e-6) for key in genus)
    first = [r for r in rows if r["file_name"] == str(images[0])]
    assert [r["rank"] for r in first] == sorted((r["rank"] for r in first), key=TAXON_RANKS.index)
    family = next(r for r in first if r["rank"] == "family")
    assert family["family"] and family["genus"] == family["species"] == family["common_name"] == ""


TAXON_RANKS = ["kingdom", "phylum", "class", "order", "family", "genus", "species"]


def test_within_excludes_the_rest_of_the_tree(toy_predictor, zeroshot_images):
    taxa = toy_predictor.index.taxa
    order = taxa["order"][0]
    in_order = taxa.filter(taxa["order"] == order).height
    rows = toy_predictor.predict([p for p, _ in zeroshot_images[:4]], rank="species", k=100,
                                 within=f"order={order.upper()}")
    assert {r["order"] for r in rows} == {order}
    assert len(rows) == 4 * in_order < 4 * taxa.height
    assert sum(r["score"] for r in rows[:in_order]) == pytest.approx(1, abs=1e-5)
    with pytest.raises(PredictInputError, match="unknown order name.*Nosuchales"):
        toy_predictor.predict([zeroshot_images[0][0]], within="order=Nosuchales")


def test_custom_labels_and_bins(toy_predictor, zeroshot_images):
    images = [p for p, _ in zeroshot_images[:3]]
    labels = sorted({truth for _, truth in zeroshot_images})
    rows = toy_predictor.classify(images, labels=labels, k=len(labels))
    assert [set(r) for r in rows[:1]] == [{"file_name", "classification", "score"}]
    assert len(rows) == 3 * len(labels)
    bins = {"first half": labels[:6], "second half": labels[6:]}
    binned = toy_predictor.classify(images, bins=bins, k=5)
    assert len(binned) == 3 * 2
    for image in images:
        scores = {r["classification"]: r["score"] for r in rows if r["file_name"] == str(image)}
        for r in (r for r in binned if r["file_name"] == str(image)):
            assert r["score"] == pytest.approx(sum(scores[label] for label in bins[r["classification"]]), abs=1e-6)
    with pytest.raises(PredictInputError, match="exactly one"):
        toy_predictor.classify(images, labels=labels, bins=bins)


def test_stored_embeddings_give_the_same_answer_as_images(toy_predictor, zeroshot_images):
    images = [p for p, _ in zeroshot_images[:6]]
    names, feats = [], []
    for batch_names, batch in toy_predictor.embed(images, head="both"):
        names += batch_names
        feats.append(batch)
    stored = {h: torch.cat([f[h] for f in feats]) for h in ("tax", "caption")}
    assert_same_rows(toy_predictor.predict_embeddings(stored, names, rank="all", k=3),
                     toy_predictor.predict(images, rank="all", k=3))


def assert_same_rows(got: list[dict], expected: list[dict]) -> None:
    assert [{**r, "score": None} for r in got] == [{**r, "score": None} for r in expected]
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in expected], abs=1e-5)


def test_inputs_may_be_pil_images_bytes_or_tensors_and_keep_their_names(toy_predictor, zeroshot_images):
    path = zeroshot_images[0][0]
    by_path = toy_predictor.predict([path], rank="genus", k=1)[0]
    tensor = image_transform(toy_predictor.model, train=False)(Image.open(path).convert("RGB"))
    rows = toy_predictor.predict([("photo.jpg", Image.open(path)), path.read_bytes(), ("tensor", tensor)],
                                 rank="genus", k=1)  # one batch: decoded images and a preprocessed tensor
    assert [r["file_name"] for r in rows] == ["photo.jpg", "1", "tensor"]
    assert all(r["genus"] == by_path["genus"] and r["score"] == pytest.approx(by_path["score"], abs=1e-5) for r in rows)
    with pytest.raises(ImageError, match="notes.txt: cannot decode"):
        toy_predictor.predict([("notes.txt", b"not an image")])
    with pytest.raises(ImageError, match="missing.jpg: no such image file"):
        toy_predictor.predict([str(path.parent / "missing.jpg")])


def test_nearest_trait_captions(toy_predictor, zeroshot_images, toy_model, toy_index):
    hits = toy_predictor.nearest_captions([p for p, _ in zeroshot_images[:2]], k=3)
    assert len(hits) == 2 and all(len(h) == 3 for h in hits)
    assert all(set(c) == {"caption", "score"} and c["caption"] for h in hits for c in h)
    assert [c["score"] for c in hits[0]] == sorted((c["score"] for c in hits[0]), reverse=True)
    bare = TaxaIndex.load(toy_index)
    bare.captions = bare.caption_embeddings = None
    with pytest.raises(PredictInputError, match="no trait captions"):
        Predictor(toy_model, bare, device="cpu").nearest_captions([zeroshot_images[0][0]])


def test_an_index_of_another_model_is_refused_naming_both_fingerprints(toy_index, toy_predictor):
    torch.manual_seed(1)
    other = build_model(MODEL)
    with pytest.raises(TaxaIndexError) as err:
        Predictor(other, toy_index, device="cpu")
    assert toy_predictor.index.fingerprint in str(err.value)
    assert Predictor(other, device="cpu").fingerprint in str(err.value)


def test_unknown_rank_is_an_error(toy_predictor, zeroshot_images):
    with pytest.raises(PredictInputError, match="unknown rank 'subspecies'"):
        toy_predictor.predict([zeroshot_images[0][0]], rank="subspecies")


def test_an_interrupted_build_resumes_and_a_finished_one_is_reused(toy_dir, n_species, tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = build_model(MODEL)
    calls = []
    real = index_module.classifier_weights

    def flaky(*args, **kwargs):
        calls.append(len(args[1]))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(index_module, "_CHUNK_TAXA", 20)
    monkeypatch.setattr(index_module, "classifier_weights", flaky)
    build = dict(label_type="sci", templates=["a photo of {}."], device="cpu", progress=False)
    with pytest.raises(KeyboardInterrupt):
        TaxaIndex.build(model, toy_dir / "catalog.parquet", tmp_path / "idx", **build)
    with pytest.raises(TaxaIndexError, match="unfinished build"):
        TaxaIndex.load(tmp_path / "idx")
    index = TaxaIndex.build(model, toy_dir / "catalog.parquet", tmp_path / "idx", **build)
    chunks = [20] * (n_species // 20) + [n_species % 20] * bool(n_species % 20)  # 64 species: 20, 20, 20, 4
    assert len(chunks) >= 3 and calls == chunks[:2] + chunks[1:]  # the first chunk was not encoded again
    assert len(index) == n_species and not (tmp_path / "idx" / ".build").exists()
    again = TaxaIndex.build(model, toy_dir / "catalog.parquet", tmp_path / "idx", **build)
    assert len(calls) == len(chunks) + 1 and torch.equal(again.embeddings, index.embeddings)
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["label_type"] == "sci" and meta["templates"] == ["a photo of {}."] and meta["versions"]


def test_a_published_tree_of_life_embedding_pair_imports(tmp_path):
    torch.manual_seed(0)
    model = build_model(MODEL)
    names = [[["Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "corax"], "Common raven"],
             [["Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "corone"], "Carrion crow"],
             [["Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Rosaceae", "Rosa", "canina"], "Dog rose"]]
    matrix = np.random.default_rng(0).standard_normal((64, 3)).astype(np.float32)
    np.save(tmp_path / "txt_emb_species.npy", matrix)
    (tmp_path / "txt_emb_species.json").write_text(json.dumps(names))
    index = TaxaIndex.from_tol(model, tmp_path, tmp_path / "idx")
    loaded = TaxaIndex.load(tmp_path / "idx")
    assert loaded.rank_values(6) == ["Corvus corax", "Corvus corone", "Rosa canina"]
    assert loaded.taxa["common_name"].to_list() == ["Common raven", "Carrion crow", "Dog rose"]
    assert torch.allclose(loaded.embeddings.norm(dim=1), torch.ones(3))
    rows = Predictor(model, index, device="cpu").predict_embeddings(torch.tensor(matrix.T[:1]), ["x"], rank="genus")
    assert rows[0]["genus"] == "Corvus" and rows[0]["score"] > 0.5
    # a model's own pair (BioCAP publishes txt_emb_biocap.*): the folder's only pair, or the .npy
    (tmp_path / "txt_emb_species.npy").rename(tmp_path / "txt_emb_biocap.npy")
    (tmp_path / "txt_emb_species.json").rename(tmp_path / "txt_emb_biocap.json")
    for source in (tmp_path, tmp_path / "txt_emb_biocap.npy"):
        again = TaxaIndex.from_tol(model, source, tmp_path / "idx2")
        assert torch.equal(again.embeddings, index.embeddings) and again.taxa.equals(index.taxa)
    (tmp_path / "txt_emb_bioclip.npy").write_bytes(b"")
    with pytest.raises(TaxaIndexError, match="expected one txt_emb_"):
        TaxaIndex.from_tol(model, tmp_path, tmp_path / "idx3")


def test_gpu_decode_is_refused_off_cuda_before_a_model_loads():
    from biocap_core.errors import GpuDecodeUnavailable

    with pytest.raises(GpuDecodeUnavailable, match="--gpu-decode needs CUDA"):
        Predictor(torch.nn.Linear(1, 1), device="cpu", gpu_decode=True)
    with pytest.raises(GpuDecodeUnavailable, match="--gpu-decode needs CUDA"):
        Predictor.from_pretrained("no-such-model", device="cpu", gpu_decode=True)
