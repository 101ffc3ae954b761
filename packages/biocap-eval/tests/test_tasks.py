"""The three tasks on the toy tree of life, checked against direct computations, and their bad-input
errors."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

from biocap_core.errors import SchemaError
from biocap_core.zeroshot import ClassificationSet, classifier_weights, encode_images, topk_accuracy
from biocap_eval.api import evaluate
from biocap_eval.embedding import Encoder
from biocap_eval.metrics import recall_at_k, rerank_metrics
from biocap_eval.registry import load_registry
from biocap_eval.tasks import EvalError, Settings, inquire, retrieval, zeroshot


def bench(tmp_path, **fields):
    """A one-entry registry written to disk and read back, as users would write one."""
    body = {
        "name": "b",
        "title": "B",
        "table": "retrieval" if fields.get("task") != "zeroshot" else "zeroshot",
        "columns": {},
        **fields,
    }
    lines = ["[[benchmark]]"] + [
        f"{k} = {json.dumps(v) if not isinstance(v, dict) else '{}'}"
        for k, v in body.items()
        if k != "subsets"
    ]
    for s in fields.get("subsets", []):
        lines.append(
            f'[[benchmark.subsets]]\nname = "{s["name"]}"\nannotation = "{s["annotation"]}"'
        )
    path = tmp_path / f"registry-{len(list(tmp_path.glob('registry-*')))}.toml"
    path.write_text("\n".join(lines) + "\n")
    return load_registry(path)["b"]


def test_zeroshot_matches_biocap_core_pieces(toy_dir, tiny_model):
    root = toy_dir / "zeroshot"
    result = evaluate(tiny_model, ["toy-zeroshot"], toy_dir, settings=Settings(per_class=True))[
        "toy-zeroshot"
    ]
    data = ClassificationSet.from_csv(root / "camera_trap.csv", root, "taxon_com")
    logits = encode_images(tiny_model, data.paths) @ classifier_weights(tiny_model, data.classnames)
    acc = topk_accuracy(logits, torch.tensor(data.labels), (1, 3, 5))
    assert result.metrics["top1"] == pytest.approx(100 * acc[1])
    assert result.metrics["top5"] == pytest.approx(100 * acc[5])
    assert result.counts == {"images": 48, "classes": 12, "skipped": 0, "unreadable": 0}
    per_class = result.details["per_class"]
    assert [c["class"] for c in per_class] == data.classnames and sum(
        c["images"] for c in per_class
    ) == 48
    assert result.metrics["mean_per_class_recall"] == pytest.approx(
        np.mean([c["top1_recall"] for c in per_class])
    )


def test_subsets_report_their_mean(toy_dir, tiny_model, tmp_path):
    table = pl.read_csv(toy_dir / "zeroshot" / "camera_trap.csv")
    table.head(20).write_csv(toy_dir / "zeroshot" / "part-a.csv")
    table.tail(28).write_csv(toy_dir / "zeroshot" / "part-b.csv")
    enc = Encoder(tiny_model)
    parts = [
        zeroshot.evaluate(
            bench(tmp_path, task="zeroshot", annotation=f"zeroshot/{p}", label_type="taxon_com"),
            toy_dir,
            enc,
            Settings(),
        )
        for p in ("part-a.csv", "part-b.csv")
    ]
    whole = zeroshot.evaluate(
        bench(
            tmp_path,
            task="zeroshot",
            label_type="taxon_com",
            images="zeroshot",
            subsets=[
                {"name": "a", "annotation": "zeroshot/part-a.csv"},
                {"name": "b", "annotation": "zeroshot/part-b.csv"},
            ],
        ),
        toy_dir,
        enc,
        Settings(),
    )
    assert whole.metrics["top1"] == pytest.approx(
        (parts[0].metrics["top1"] + parts[1].metrics["top1"]) / 2
    )
    assert whole.counts["images"] == 48 and set(whole.details["subsets"]) == {"a", "b"}


def test_custom_templates_and_label_type_override(toy_dir, tiny_model):
    templates = ("a drawing of {}.", "{}")
    got = evaluate(
        tiny_model,
        ["toy-zeroshot"],
        toy_dir,
        settings=Settings(templates=templates, label_type="sci"),
    )["toy-zeroshot"]
    root = toy_dir / "zeroshot"
    data = ClassificationSet.from_csv(root / "camera_trap.csv", root, "sci")
    logits = encode_images(tiny_model, data.paths) @ classifier_weights(
        tiny_model, data.classnames, templates
    )
    assert got.metrics["top1"] == pytest.approx(
        100 * topk_accuracy(logits, torch.tensor(data.labels), (1,))[1]
    )


def test_bad_zeroshot_input_names_file_column_and_rows(toy_dir, tiny_model, tmp_path):
    enc = Encoder(tiny_model)
    root = toy_dir / "zeroshot"
    with pytest.raises(
        SchemaError, match=r"metadata.csv: label type 'taxon_com' needs column\(s\) \['kingdom'"
    ):
        zeroshot.evaluate(
            bench(
                tmp_path,
                task="zeroshot",
                annotation="zeroshot/metadata.csv",
                label_type="taxon_com",
            ),
            toy_dir,
            enc,
            Settings(),
        )
    table = pl.read_csv(root / "metadata.csv")
    table.drop("filepath").write_csv(root / "nofilepath.csv")
    with pytest.raises(
        SchemaError,
        match=r"nofilepath.csv: classification table is missing column\(s\) \['filepath",
    ):
        zeroshot.evaluate(
            bench(
                tmp_path, task="zeroshot", annotation="zeroshot/nofilepath.csv", label_type="asis"
            ),
            toy_dir,
            enc,
            Settings(),
        )
    table.head(0).write_csv(root / "empty.csv")
    with pytest.raises(SchemaError, match="empty.csv: no images to evaluate"):
        zeroshot.evaluate(
            bench(tmp_path, task="zeroshot", annotation="zeroshot/empty.csv", label_type="asis"),
            toy_dir,
            enc,
            Settings(),
        )
    pl.concat(
        [table, pl.DataFrame({"": [99], "filepath": ["images/gone.jpg"], "class": ["Gone gone"]})]
    ).write_csv(root / "gone.csv")
    gone = bench(tmp_path, task="zeroshot", annotation="zeroshot/gone.csv", label_type="asis")
    with pytest.raises(
        SchemaError, match=r"gone.csv: 1 of 49 image\(s\) missing.*gone.jpg.*--skip-missing"
    ):
        zeroshot.evaluate(gone, toy_dir, enc, Settings())
    kept = zeroshot.evaluate(gone, toy_dir, enc, Settings(skip_missing=True))
    # the class of the skipped image stays a candidate: the label set is the annotation's
    assert kept.counts == {"images": 48, "classes": 13, "skipped": 1, "unreadable": 0}
    assert kept.details["skipped_first"][0].endswith("images/gone.jpg")


def test_retrieval_recall_and_the_prefix(toy_dir, tiny_model):
    b = load_registry()["toy-retrieval"]
    enc = Encoder(tiny_model)
    fixed = retrieval.evaluate(b, toy_dir, enc, Settings())
    bug = retrieval.evaluate(b, toy_dir, enc, Settings(prefix_bug=True))
    assert fixed.details["example_text"].startswith("a photo of ")
    assert (
        bug.details["example_text"].startswith("a photo of")
        and bug.details["example_text"][10] != " "
    )
    pairs = retrieval.read(b, toy_dir)
    tok = tiny_model.tokenizer()
    with torch.no_grad():
        texts = tiny_model.encode_text(
            tok([f"a photo of {c}" for c in pairs.captions]), normalize=True
        )
    sim = encode_images(tiny_model, pairs.paths) @ texts.T
    assert fixed.metrics["i2t_R@5"] == pytest.approx(100 * recall_at_k(sim, (5,))[5], abs=1e-4)
    assert fixed.metrics["t2i_R@1"] == pytest.approx(100 * recall_at_k(sim.T, (1,))[1], abs=1e-4)
    # the toy's captions describe each photo, so no two of its 24 pairs share one
    assert fixed.counts == {"pairs": 24, "distinct_captions": 24, "skipped": 0, "unreadable": 0}


def test_retrieval_missing_images_and_empty_table(toy_dir, tiny_model, tmp_path):
    enc = Encoder(tiny_model)
    table = pl.read_csv(toy_dir / "retrieval" / "toy_retrieval.csv", infer_schema=False)
    pl.concat([table, table.head(1).with_columns(pl.lit("999").alias("id"))]).write_csv(
        toy_dir / "retrieval" / "extra.csv"
    )
    b = bench(
        tmp_path, task="retrieval", annotation="retrieval/extra.csv", images="retrieval/images"
    )
    with pytest.raises(EvalError, match=r"extra.csv: 1 of 25 image\(s\) missing.*999.jpg"):
        retrieval.evaluate(b, toy_dir, enc, Settings())
    assert retrieval.evaluate(b, toy_dir, enc, Settings(skip_missing=True)).counts["skipped"] == 1
    table.head(0).write_csv(toy_dir / "retrieval" / "none.csv")
    with pytest.raises(EvalError, match="none.csv: no image-caption pairs"):
        retrieval.evaluate(
            bench(
                tmp_path,
                task="retrieval",
                annotation="retrieval/none.csv",
                images="retrieval/images",
            ),
            toy_dir,
            enc,
            Settings(),
        )


def test_inquire_per_query_metrics_and_supercategory_means(toy_dir, tiny_model):
    b = load_registry()["toy-inquire"]
    enc = Encoder(tiny_model)
    result = inquire.evaluate(b, toy_dir, enc, Settings())
    rows = pl.read_parquet(toy_dir / "inquire" / "rerank.parquet")
    per_query = {r["query"]: r for r in result.details["per_query"]}
    assert len(per_query) == rows["query"].n_unique() == result.counts["queries"] == 8
    q = rows["query"][0]
    cand = rows.filter(pl.col("query") == q)
    scores = (
        encode_images(tiny_model, [toy_dir / "inquire" / p for p in cand["filepath"]])
        @ enc.texts([q])[0]
    ).numpy()
    expected = rerank_metrics(cand["relevant"].to_numpy(), scores)
    assert per_query[q]["ap"] == pytest.approx(100 * expected.ap, abs=1e-4)
    assert per_query[q]["mrr"] == pytest.approx(expected.mrr)
    groups = {"Appearance", "Behavior", "Context", "Species"}
    for g in groups:
        members = [r["ap"] for r in per_query.values() if r["supercategory"] == g]
        assert result.metrics[f"ap_{g}"] == pytest.approx(np.mean(members))
    assert result.metrics["ap"] == pytest.approx(np.mean([r["ap"] for r in per_query.values()]))
    at5 = inquire.evaluate(b, toy_dir, enc, Settings(inquire_k=5))
    assert at5.metrics["ap"] < result.metrics["ap"]  # positives below rank 5 now count as missed
    assert result.counts["images"] == len(set(rows["filepath"]))  # each distinct image encoded once


def test_inquire_supercategories_come_from_the_candidates_without_a_queries_file(
    toy_dir, tiny_model, tmp_path
):
    enc = Encoder(tiny_model)
    with_column = inquire.evaluate(
        bench(tmp_path, task="inquire", candidates="inquire/rerank.parquet", images="inquire"),
        toy_dir,
        enc,
        Settings(),
    )
    assert "ap_Species" in with_column.metrics
    pl.read_parquet(toy_dir / "inquire" / "rerank.parquet").drop("supercategory").write_csv(
        toy_dir / "inquire" / "plain.csv"
    )
    plain = inquire.evaluate(
        bench(tmp_path, task="inquire", candidates="inquire/plain.csv", images="inquire"),
        toy_dir,
        enc,
        Settings(),
    )
    assert set(plain.metrics) == {"ap", "ndcg", "mrr", "precision", "recall"}
    assert plain.counts["queries_without_supercategory"] == 8
    assert plain.metrics["ap"] == pytest.approx(with_column.metrics["ap"])


def test_inquire_from_a_hugging_face_dataset_matches_the_local_files(toy_dir, tiny_model, tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = pl.read_parquet(toy_dir / "inquire" / "rerank.parquet")
    hub = tmp_path / "INQUIRE-Rerank"
    (hub / "data").mkdir(parents=True)
    ds = datasets.Dataset.from_dict(
        {
            "query": rows["query"].to_list(),
            "relevant": rows["relevant"].to_list(),
            "inat24_image_id": rows["inat24_image_id"].to_list(),
            "supercategory": rows["supercategory"].to_list(),
            "image": [
                {"bytes": (toy_dir / "inquire" / p).read_bytes(), "path": None}
                for p in rows["filepath"]
            ],
        }
    ).cast_column("image", datasets.Image())
    ds.to_parquet(str(hub / "data" / "test-00000-of-00001.parquet"))
    enc = Encoder(tiny_model, cache_dir=tmp_path / "cache")
    b = bench(
        tmp_path,
        task="inquire",
        queries="inquire/queries.csv",
        candidates="inquire/absent.parquet",
        hf_dataset=str(hub),
        hf_split="test",
    )
    assert inquire.status(b, toy_dir).state == "hub"
    from_hub = inquire.evaluate(b, toy_dir, enc, Settings())
    local = inquire.evaluate(
        load_registry()["toy-inquire"], toy_dir, Encoder(tiny_model), Settings()
    )
    assert from_hub.metrics == pytest.approx(local.metrics, abs=1e-4)
    assert from_hub.counts["images"] == local.counts["images"] == enc.encoded
    inquire.evaluate(b, toy_dir, enc, Settings())
    assert enc.encoded == local.counts["images"]  # second run: every image from the cache


def truncate(path, keep=0.5):
    """Cut a JPEG short, as an interrupted download leaves it: the header still opens, decoding
    fails."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.fixture
def data_copy(toy_dir, tmp_path):
    """A private copy of the toy data, so breaking images here leaves the shared one alone."""
    import shutil

    return shutil.copytree(toy_dir, tmp_path / "data")


def test_undecodable_images_are_skipped_named_and_left_out_of_the_metrics(
    data_copy, tiny_model, tmp_path
):
    reg = load_registry()
    enc = Encoder(tiny_model, workers=1)  # the flag must come back from a loader worker process
    clean = {
        name: evaluate(tiny_model, [name], data_copy)[name]
        for name in ("toy-zeroshot", "toy-retrieval", "toy-inquire")
    }
    # zero-shot: one more row whose image is truncated
    root = data_copy / "zeroshot"
    table = pl.read_csv(root / "camera_trap.csv")
    broken = root / "images" / "broken.jpg"
    broken.write_bytes((root / table["filepath"][0]).read_bytes())
    truncate(broken)
    pl.concat(
        [table, table.head(1).with_columns(pl.lit("images/broken.jpg").alias("filepath"))]
    ).write_csv(root / "broken.csv")
    b = bench(tmp_path, task="zeroshot", annotation="zeroshot/broken.csv", label_type="taxon_com")
    got = zeroshot.evaluate(b, data_copy, enc, Settings())
    assert got.counts == {"images": 48, "classes": 12, "skipped": 0, "unreadable": 1}
    assert got.metrics == pytest.approx(
        clean["toy-zeroshot"].metrics
    )  # the sample is dropped, label and all
    assert list(got.details["unreadable"]) == [str(broken)]
    assert "truncated" in got.details["unreadable"][str(broken)].lower()  # why, as PIL says it
    with pytest.raises(
        EvalError, match=r"broken.csv: 1 image\(s\) cannot be decoded; first: .*broken.jpg"
    ):
        zeroshot.evaluate(b, data_copy, enc, Settings(strict=True))
    table.head(1).with_columns(pl.lit("images/broken.jpg").alias("filepath")).write_csv(
        root / "only-broken.csv"
    )
    with pytest.raises(
        EvalError, match=r"only-broken.csv: no images to evaluate \(no image could be decoded\)"
    ):
        zeroshot.evaluate(
            bench(
                tmp_path,
                task="zeroshot",
                annotation="zeroshot/only-broken.csv",
                label_type="taxon_com",
            ),
            data_copy,
            enc,
            Settings(),
        )
    # retrieval: an image that is not an image at all drops its pair
    pairs = retrieval.read(reg["toy-retrieval"], data_copy)
    pairs.paths[3].write_bytes(b"<html>404 not found</html>")
    got = retrieval.evaluate(reg["toy-retrieval"], data_copy, enc, Settings())
    assert got.counts["pairs"] == 23 and got.counts["unreadable"] == 1
    assert list(got.details["unreadable"]) == [str(pairs.paths[3])]
    kept = [i for i in range(24) if i != 3]
    texts = enc.texts([f"a photo of {pairs.captions[i]}" for i in kept])
    sim = encode_images(tiny_model, [pairs.paths[i] for i in kept]) @ texts.T
    assert got.metrics["i2t_R@1"] == pytest.approx(100 * recall_at_k(sim, (1,))[1], abs=1e-4)
    # INQUIRE: a truncated relevant candidate leaves its query's list and positives
    rows = pl.read_parquet(data_copy / "inquire" / "rerank.parquet")
    q = rows["query"][0]
    extra = (
        rows.filter(pl.col("query") == q)
        .head(1)
        .with_columns(
            pl.lit("images/broken.jpg").alias("filepath"),
            pl.lit(1).cast(rows["relevant"].dtype).alias("relevant"),
        )
    )
    broken_inquire = data_copy / "inquire" / "images" / "broken.jpg"
    broken_inquire.write_bytes(broken.read_bytes())
    pl.concat([rows, extra]).write_parquet(data_copy / "inquire" / "broken.parquet")
    got = inquire.evaluate(
        bench(
            tmp_path,
            task="inquire",
            candidates="inquire/broken.parquet",
            images="inquire",
            queries="inquire/queries.csv",
        ),
        data_copy,
        enc,
        Settings(),
    )
    assert got.metrics == pytest.approx(clean["toy-inquire"].metrics)
    assert got.counts["unreadable"] == 1 and got.counts["candidates"] == rows.height
    assert list(got.details["unreadable"]) == [str(broken_inquire)]


def test_undecodable_images_are_not_cached(data_copy, tiny_model, tmp_path):
    b = load_registry()["toy-retrieval"]
    truncate(retrieval.read(b, data_copy).paths[0])
    enc = Encoder(tiny_model, cache_dir=tmp_path / "cache")
    first = retrieval.evaluate(b, data_copy, enc, Settings())
    second = retrieval.evaluate(b, data_copy, enc, Settings())
    assert (
        first.counts["unreadable"] == second.counts["unreadable"] == 1
    )  # tried again, not read from the cache
    assert enc.encoded == 23 and len(enc.cache) == 23
    assert second.metrics == first.metrics
