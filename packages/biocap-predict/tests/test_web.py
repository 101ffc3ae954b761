"""The demo page's JSON API, on the real app around the predictor trained on the toy tree of life."""

from __future__ import annotations

import importlib
import re
import sys

import pytest
from biocap_core.taxonomy import RANKS

pytest.importorskip("fastapi", reason="the [web] extra is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from biocap_predict.web import create_app  # noqa: E402

MAX_UPLOAD_MB = 0.25


@pytest.fixture(scope="module")
def client(toy_predictor):
    return TestClient(create_app(toy_predictor, model_name="BioCAP-toy", max_upload_mb=MAX_UPLOAD_MB))


def post(client, name: str, data: bytes, **form):
    return client.post("/api/predict", files={"image": (name, data, "image/jpeg")}, data=form)


def test_health_says_which_model_serves_and_the_upload_limit(client, toy_predictor, n_species):
    health = client.get("/api/health").json()
    assert health["status"] == "ok"
    assert health["model"] == "BioCAP-toy"
    assert health["taxa"] == n_species  # the toy tree's species
    assert health["ranks"] == list(RANKS)
    assert health["captions"] is toy_predictor.index.has_captions is True
    assert health["max_upload_bytes"] == int(MAX_UPLOAD_MB * 2**20)


def test_predict_names_the_true_species_and_the_taxa_of_every_rank(client, toy_predictor, photo):
    response = post(client, photo["name"], photo["bytes"], k="3")
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["file_name"] == photo["name"]
    assert result["mode"] == "taxa"
    assert [group["rank"] for group in result["taxa"]] == list(RANKS)
    assert result["taxa"][-1]["predictions"][0]["name"] == photo["scientific"]
    # every rank holds the library's answer for that rank, best first, named at that rank
    rows = toy_predictor.predict([(photo["name"], photo["bytes"])], rank="all", k=3)
    for group in result["taxa"]:
        expected = [r for r in rows if r["rank"] == group["rank"]]
        assert [p["name"] for p in group["predictions"]] == [r[group["rank"]] for r in expected]
        assert [p["score"] for p in group["predictions"]] == pytest.approx([r["score"] for r in expected], abs=1e-5)
        scores = [p["score"] for p in group["predictions"]]
        assert scores == sorted(scores, reverse=True) and len(scores) <= 3


def test_predict_returns_the_captions_the_library_finds(client, toy_predictor, photo):
    captions = post(client, photo["name"], photo["bytes"]).json()["captions"]
    expected = toy_predictor.nearest_captions([(photo["name"], photo["bytes"])], k=5)[0]
    assert [c["caption"] for c in captions] == [c["caption"] for c in expected]
    assert [c["score"] for c in captions] == pytest.approx([c["score"] for c in expected], abs=1e-5)


def test_custom_labels_rank_the_photos_own_species_first(client, photo):
    labels = [*photo["others"], photo["scientific"]]
    response = post(client, photo["name"], photo["bytes"], labels="\n".join(labels) + "\n\n")
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["mode"] == "labels"
    assert sorted(r["label"] for r in result["labels"]) == sorted(labels)
    assert result["labels"][0]["label"] == photo["scientific"]


def test_labels_with_no_text_ask_for_one(client, photo):
    response = post(client, photo["name"], photo["bytes"], labels=" \n ")
    assert response.status_code == 422
    assert "at least one label" in response.json()["detail"]


def test_not_an_image_is_refused_with_a_message_naming_the_file(client):
    response = post(client, "notes.txt", b"these are field notes, not a photo")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "notes.txt" in detail and "image" in detail
    assert "BytesIO" not in detail


def test_a_truncated_jpeg_is_refused(client, photo):
    response = post(client, "cut.jpg", photo["bytes"][: len(photo["bytes"]) // 2])
    assert response.status_code == 422
    assert "cut.jpg" in response.json()["detail"]


def test_an_upload_over_the_limit_is_413_before_it_is_read(client):
    response = post(client, "huge.jpg", b"\xff" * int(MAX_UPLOAD_MB * 2**20 + 100_000))
    assert response.status_code == 413
    assert "too large" in response.json()["detail"]


def test_an_upload_over_the_limit_without_content_length_is_413_too(client):
    def chunks():  # a generator body goes out chunked, with no Content-Length to check up front
        yield b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"huge.jpg\"\r\n\r\n"
        for _ in range(int(MAX_UPLOAD_MB * 16) + 4):
            yield b"\xff" * 65536

    response = client.post("/api/predict", content=chunks(),
                           headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413
    assert "too large" in response.json()["detail"]


def test_a_request_without_a_photo_gets_a_readable_422(client):
    response = client.post("/api/predict", data={"k": "5"})
    assert response.status_code == 422
    assert response.json()["detail"] == "Bad request: image: Field required"


def test_the_server_keeps_serving_after_bad_uploads(client, photo):
    assert post(client, "notes.txt", b"not a photo").status_code == 422
    assert post(client, "cut.jpg", photo["bytes"][:200]).status_code == 422
    assert post(client, "huge.jpg", b"\0" * (2**20)).status_code == 413
    again = post(client, photo["name"], photo["bytes"])
    assert again.status_code == 200
    assert again.json()["taxa"][-1]["predictions"][0]["name"] == photo["scientific"]


def test_the_page_and_its_assets_load_from_the_server_alone(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assets = re.findall(r'(?:href|src)="(static/[^"]+)"', page.text)
    assert sorted(assets) == ["static/page.css", "static/page.js"]
    texts = [page.text] + [client.get("/" + asset).text for asset in assets]
    # Offline: nothing is fetched from anywhere but this server (no CDN, no web fonts).
    assert not any(re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import|@font-face", t) for t in texts)
    assert client.get("/docs").status_code == 404  # FastAPI's docs page would load Swagger UI from a CDN


def test_the_web_module_says_how_to_install_the_extra_when_fastapi_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # makes `import fastapi` raise ImportError
    monkeypatch.delitem(sys.modules, "biocap_predict.web")
    with pytest.raises(ImportError, match=re.escape("pip install 'biocap-predict[web]'")):
        importlib.import_module("biocap_predict.web")
