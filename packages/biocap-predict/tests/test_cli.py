"""The command line on the toy tree of life: index, predict (folders, formats, stored embeddings,
labels, bins), embed, list-taxa, list-models, and a clear one-line error for each kind of bad input."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from biocap_predict.cli import app
from biocap_predict.outputs import read_rows

pytestmark = pytest.mark.slow
MODEL = "BioCAP-toy"


def run(*args, ok: bool = True):
    args = [str(a) for a in args]
    if args[0] in ("predict", "embed"):
        args += ["--workers", "0"]
    result = CliRunner().invoke(app, args)
    if ok:
        assert result.exit_code == 0, f"{args}\n{result.output}\n{result.exception!r}"
    return result


@pytest.fixture(scope="module")
def model_args(trained_checkpoint) -> list:
    return ["--model", MODEL, "--pretrained", trained_checkpoint, "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def folder(toy_dir, tmp_path_factory):
    """Six toy images in nested folders plus a text file that is not an image."""
    root = tmp_path_factory.mktemp("photos")
    images = sorted((toy_dir / "zeroshot" / "images").rglob("*.jpg"))[:6]
    for i, image in enumerate(images):
        (root / f"site{i % 2}").mkdir(exist_ok=True)
        shutil.copy(image, root / f"site{i % 2}" / image.name)
    (root / "site0" / "notes.txt").write_text("field notes, not a photo")
    return root


def test_index_command_builds_then_reuses_an_index(toy_dir, n_species, model_args, tmp_path, toy_predictor):
    args = ["index", "--taxa", toy_dir / "wiki" / "species.csv", "--out", tmp_path / "idx", *model_args,
            "--log", tmp_path / "index.json"]
    run(*args)
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["n_taxa"] == n_species and meta["label_type"] == "taxon_com" and len(meta["templates"]) == 81
    assert meta["model_fingerprint"] == toy_predictor.fingerprint
    stamp = (tmp_path / "idx" / "text.safetensors").stat().st_mtime_ns
    run(*args)
    assert (tmp_path / "idx" / "text.safetensors").stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "index.json").read_text())["model_fingerprint"] == meta["model_fingerprint"]
    taxa = run("list-taxa", "--index", tmp_path / "idx", "--rank", "genus").output.split("\n")
    assert len([t for t in taxa if t]) == toy_predictor.index.groups.size(5)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_folder_predicts_in_every_format_and_skips_what_is_not_an_image(fmt, folder, toy_index, model_args,
                                                                          toy_predictor, tmp_path):
    out = tmp_path / f"pred.{fmt}"
    result = run("predict", folder, "--recursive", "--index", toy_index, "--rank", "all", "--k", "2",
                 "--format", fmt, "--output", out, "--log", tmp_path / "run.json", *model_args)
    assert "skipped: " in result.output and "notes.txt: cannot decode" in result.output
    images = sorted(str(p) for p in folder.rglob("*.jpg"))
    expected = toy_predictor.predict(images, rank="all", k=2)
    rows = read_rows(out, fmt)
    assert [(r["file_name"], r["rank"], r["species"]) for r in rows] == \
        [(r["file_name"], r["rank"], r["species"]) for r in expected]
    assert [r["score"] for r in rows] == pytest.approx([r["score"] for r in expected], abs=1e-5)
    log = json.loads((tmp_path / "run.json").read_text())
    assert log["images"] == 6 and len(log["skipped"]) == 1 and log["model_fingerprint"] == toy_predictor.fingerprint
    assert log["versions"]["biocap-predict"] and log["started_at"] <= log["finished_at"]


def test_table_format_and_nearest_captions(folder, toy_index, model_args):
    table = run("predict", folder / "site1", "--index", toy_index, "--captions", "2", "--k", "1", "--format",
                "table", *model_args).output
    header = table.splitlines()[0].split()
    assert header[:2] == ["file_name", "kingdom"] and header[-1] == "caption"
    assert table.count(" caption ") == 3 * 2


def test_stored_embeddings_predict_like_the_images(folder, toy_index, model_args, tmp_path):
    for suffix in ("parquet", "npz", "jsonl"):
        emb = tmp_path / f"emb.{suffix}"
        run("embed", folder / "site1", "--head", "both", "--output", emb, *model_args)
        from_images = run("predict", folder / "site1", "--index", toy_index, "--rank", "all", *model_args).output
        stored = run("predict", "--embeddings", emb, "--index", toy_index, "--rank", "all", *model_args).output
        assert _scores_dropped(stored) == _scores_dropped(from_images)


def _scores_dropped(csv_text: str) -> list[str]:
    return [line.rsplit(",", 2)[0] + line.rsplit(",", 1)[1] for line in csv_text.splitlines()]


def test_labels_from_a_list_or_file_and_bins(folder, model_args, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("red crawler\nblue sprout\n\ngreen cap\n")
    rows = run("predict", folder / "site1", "--labels", labels, "--k", "3", *model_args).output.splitlines()
    assert rows[0] == "file_name,classification,score" and len(rows) == 1 + 3 * 3
    listed = run("predict", folder / "site1", "--labels", "red crawler,blue sprout,green cap", "--k", "3",
                 *model_args).output.splitlines()
    assert listed == rows
    bins = tmp_path / "bins.csv"
    bins.write_text("label,bin\nred crawler,warm\nblue sprout,cold\ngreen cap,cold\n")
    binned = run("predict", folder / "site1", "--bins", bins, *model_args).output.splitlines()
    assert {line.split(",")[1] for line in binned[1:]} == {"warm", "cold"} and len(binned) == 1 + 3 * 2


@pytest.mark.parametrize("case, message", [
    ("missing", "nowhere.jpg: no such image file or folder"),
    ("empty_labels", "the label file is empty"),
    ("rank", "unknown rank 'subspecies'"),
    ("other_model", "was built with model"),
    ("two_sources", "one of --index, --labels or --bins, not several"),
    ("gpu_decode_predict", "--gpu-decode needs CUDA"),
    ("gpu_decode_embed", "--gpu-decode needs CUDA"),
])
def test_bad_input_is_one_clear_error(case, message, folder, toy_index, model_args, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    image = next(folder.rglob("*.jpg"))
    args = {
        "missing": ["predict", tmp_path / "nowhere.jpg", "--index", toy_index, *model_args],
        "empty_labels": ["predict", image, "--labels", empty, *model_args],
        "rank": ["predict", image, "--index", toy_index, "--rank", "subspecies", *model_args],
        "other_model": ["predict", image, "--index", toy_index, "--model", MODEL, "--device", "cpu"],
        "two_sources": ["predict", image, "--index", toy_index, "--labels", "a,b", *model_args],
        "gpu_decode_predict": ["predict", image, "--index", toy_index, "--gpu-decode", *model_args],
        "gpu_decode_embed": ["embed", image, "--output", tmp_path / "e.parquet", "--gpu-decode", *model_args],
    }[case]
    result = run(*args, ok=False)
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    if case == "other_model":
        assert result.output.count("fingerprint") == 2


def test_list_models_names_toolkit_and_open_clip_models():
    lines = run("list-models").output.splitlines()
    assert lines[0].startswith("BioCAP-toy") and any(line.startswith("ViT-B-16\t") and "openai" in line
                                                      for line in lines)
