"""A first run that needs nothing but a photo: ``biocap-predict predict photo.jpg`` with no index,
for a released model whose tree-of-life text embeddings are published on the Hugging Face Hub.

No network is used. The Hub is either a cache laid out as ``huggingface_hub`` lays it out (blobs
named by their hash, snapshot links, ``refs/main``), used with ``HF_HUB_OFFLINE=1`` and ``HF_HOME``
pointed at it, or a small HTTP server on 127.0.0.1 answering the Hub's download requests
(``HF_ENDPOINT``).
Both hold the toy model exported as an OpenCLIP folder under ``imageomics/biocap`` and, as BioCAP's
published embeddings, the toy index's text matrix and names.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from biocap_predict.cli import app
from biocap_predict.hub import PUBLISHED, published_for
from biocap_predict.index import TaxaIndex
from biocap_predict.outputs import read_rows
from tqdm import tqdm
from typer.testing import CliRunner

pytestmark = pytest.mark.slow
BIOCAP = PUBLISHED["hf-hub:imageomics/biocap"]
COMMIT = {"model": "1" * 40, "dataset": "2" * 40}
CLI = Path(sys.executable).with_name("biocap-predict")
PREDICT = ["--device", "cpu", "--workers", "0", "--quiet", "--rank", "all", "--k", "3",
           "--format", "jsonl"]


@pytest.fixture(scope="module")
def hub_files(toy_model, toy_index, tmp_path_factory) -> dict[tuple[str, str], dict[str, bytes]]:
    """(repo type, repo id) -> {path in the repo: bytes}: the toy model as imageomics/biocap and its
    tree-of-life embeddings where BioCAP's are published."""
    from biocap_core.checkpoints import export_open_clip

    folder = export_open_clip(toy_model, tmp_path_factory.mktemp("export"))
    index = TaxaIndex.load(toy_index)
    matrix = tmp_path_factory.mktemp("tol") / "m.npy"
    np.save(matrix, index.embeddings.numpy().T)  # published as (dim, taxa)
    names = [
        [
            [r[c] for c in ("kingdom", "phylum", "class", "order", "family", "genus", "species")],
            r["common_name"],
        ]
        for r in index.taxa.iter_rows(named=True)
    ]
    return {
        ("model", "imageomics/biocap"): {p.name: p.read_bytes() for p in folder.iterdir()},
        (BIOCAP.repo_type, BIOCAP.repo_id): {
            BIOCAP.matrix: matrix.read_bytes(),
            BIOCAP.names: json.dumps(names).encode(),
        },
    }


def lay_out_cache(hf_home: Path, files: dict[tuple[str, str], dict[str, bytes]]) -> None:
    """Write ``files`` as huggingface_hub's cache holds them under ``HF_HOME/hub``."""
    for (repo_type, repo_id), contents in files.items():
        repo = hf_home / "hub" / f"{repo_type}s--{repo_id.replace('/', '--')}"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(COMMIT[repo_type])
        for name, data in contents.items():
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(exist_ok=True)
            blob.write_bytes(data)
            link = repo / "snapshots" / COMMIT[repo_type] / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))


def cli(photo: Path, env: dict, *args) -> subprocess.CompletedProcess:
    """``biocap-predict predict PHOTO`` as a user runs it (the released BioCAP is the default)."""
    return subprocess.run([str(CLI), "predict", str(photo), *PREDICT, *args], env=env,
                          capture_output=True, text=True, timeout=300)


def hub_env(child_env, tmp_path: Path, **extra) -> dict:
    env = {k: v for k, v in child_env.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    return {
        **env,
        "HF_HOME": str(tmp_path / "hf"),
        "BIOCAP_CACHE": str(tmp_path / "biocap"),
        **extra,
    }


def rows_of(run: subprocess.CompletedProcess, tmp_path: Path) -> list[dict]:
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "rows.jsonl"
    out.write_text(run.stdout)
    return read_rows(out, "jsonl")


def assert_same_predictions(rows: list[dict], expected: list[dict]) -> None:
    key = (
        "rank",
        "kingdom",
        "phylum",
        "class",
        "order",
        "family",
        "genus",
        "species",
        "common_name",
    )
    assert [tuple(r[c] for c in key) for r in rows] == [
        tuple(e[c] or "" for c in key) for e in expected
    ]
    assert [r["score"] for r in rows] == pytest.approx([e["score"] for e in expected], abs=1e-4)


def test_a_photo_alone_predicts_over_the_published_tree_offline_and_reuses_the_import(
    hub_files, photo, toy_predictor, child_env, tmp_path, monkeypatch
):
    lay_out_cache(tmp_path / "hf", hub_files)
    env = hub_env(child_env, tmp_path, HF_HUB_OFFLINE="1")
    expected = toy_predictor.predict([photo["path"]], rank="all", k=3)

    first = cli(photo["path"], env)
    assert_same_predictions(rows_of(first, tmp_path), expected)
    assert "importing the tree-of-life text embeddings as a taxa index (once)" in first.stderr
    assert "downloading" not in first.stderr
    (imported,) = (tmp_path / "biocap" / "predict" / "published" / "imageomics-biocap").iterdir()
    assert imported.name.startswith(COMMIT["dataset"][:12])
    meta = json.loads((imported / "index.json").read_text())
    assert meta["source"] == "tol" and meta["n_taxa"] == len(toy_predictor.index)
    assert meta["inputs"]["tol"].endswith(f"snapshots/{COMMIT['dataset']}/{BIOCAP.matrix}")
    stamp = (imported / "text.safetensors").stat().st_mtime_ns

    # a later run (in this process, to save a start-up: huggingface_hub read its settings on import)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("BIOCAP_CACHE", str(tmp_path / "biocap"))
    out = tmp_path / "again.jsonl"
    again = CliRunner().invoke(app, ["predict", str(photo["path"]), *PREDICT, "--output", str(out)])
    assert again.exit_code == 0, again.output
    assert_same_predictions(read_rows(out, "jsonl"), expected)
    assert "importing" not in again.output
    assert (
        f"the published tree of life of hf-hub:imageomics/biocap, {len(toy_predictor.index)} taxa"
        in again.output
    )
    assert (imported / "text.safetensors").stat().st_mtime_ns == stamp


class FakeHub(http.server.ThreadingHTTPServer):
    """Answers the Hub's ``/[datasets/]ORG/NAME/resolve/REV/PATH`` requests (HEAD: commit, ETag and
    size headers; GET: the bytes) from ``files``, and counts the GETs of each path."""

    def __init__(self, files: dict[tuple[str, str], dict[str, bytes]]):
        self.files = {
            (f"datasets/{repo}" if kind == "dataset" else repo, name): (data, COMMIT[kind])
            for (kind, repo), contents in files.items()
            for name, data in contents.items()
        }
        self.downloads: dict[str, int] = {}
        super().__init__(("127.0.0.1", 0), _HubHandler)


class _HubHandler(http.server.BaseHTTPRequestHandler):
    server: FakeHub

    def _answer(self, body: bool) -> None:
        repo, sep, rest = self.path.split("?")[0].lstrip("/").partition("/resolve/")
        found = self.server.files.get((repo, rest.partition("/")[2])) if sep else None
        if found is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data, commit = found
        self.send_response(200)
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.server.downloads[rest.partition("/")[2]] = (
                self.server.downloads.get(rest.partition("/")[2], 0) + 1
            )
            self.wfile.write(data)

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)

    def log_message(self, *args):
        pass


def test_the_first_online_run_says_what_it_downloads_and_how_big(
    hub_files, photo, toy_predictor, child_env, tmp_path
):
    hub = FakeHub(hub_files)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    try:
        env = hub_env(child_env, tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{hub.server_address[1]}")
        first = cli(photo["path"], env)
    finally:
        hub.shutdown()
    expected = toy_predictor.predict([photo["path"]], rank="all", k=3)
    assert_same_predictions(rows_of(first, tmp_path), expected)
    sizes = {name: len(data) for name, data in hub_files[BIOCAP.repo_type, BIOCAP.repo_id].items()}
    # the embeddings first (before the model loads, which fails sooner when they are missing)
    line, weights = [line for line in first.stderr.splitlines() if line.startswith("downloading")]
    assert f"dataset {BIOCAP.repo_id}" in line and str(tmp_path / "hf" / "hub") in line
    for name, size in sizes.items():  # each file with the size the Hub's headers gave
        assert f"{name} ({tqdm.format_sizeof(size, 'B', 1000)})" in line, line
    model_file = hub_files["model", "imageomics/biocap"]["open_clip_model.safetensors"]
    assert weights.startswith("downloading the weights of hf-hub:imageomics/biocap")
    size = tqdm.format_sizeof(len(model_file), "B", 1000)
    assert f"open_clip_model.safetensors ({size})" in weights
    assert {name: hub.downloads.get(name) for name in sizes} == {name: 1 for name in sizes}
    assert (
        tmp_path / "hf" / "hub" / "datasets--imageomics--TreeOfLife-10M" / "refs" / "main"
    ).read_text() == COMMIT["dataset"]


def test_another_model_without_an_index_is_told_how_to_build_one(photo):
    result = CliRunner().invoke(
        app, ["predict", str(photo["path"]), "--model", "BioCAP-toy", "--device", "cpu"]
    )
    assert result.exit_code == 1
    assert "BioCAP-toy has no published tree-of-life embeddings" in result.output
    assert (
        "biocap-predict index --model BioCAP-toy" in result.output
        and "--index IDX" in result.output
    )


def test_offline_without_the_embeddings_in_the_cache_names_what_is_missing(monkeypatch, tmp_path):
    from biocap_predict.errors import TaxaIndexError
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(TaxaIndexError) as caught:
        published_for("hf-hub:imageomics/bioclip-2").fetch()
    message = str(caught.value)
    assert "imageomics/TreeOfLife-200M" in message and "embeddings/txt_emb_species.npy" in message
    assert "HF_HUB_OFFLINE is set" in message and str(tmp_path / "hub") in message
