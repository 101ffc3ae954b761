"""The demo page's JSON API, on the real app around the predictor trained on the toy tree of
life."""

from __future__ import annotations

import importlib
import io
import re
import struct
import sys
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest

from biocap_core.taxonomy import RANKS

pytest.importorskip("fastapi", reason="the [web] extra is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from biocap_predict.web import create_app  # noqa: E402

MAX_UPLOAD_MB = 0.25


@pytest.fixture(scope="module")
def client(toy_predictor):
    return TestClient(
        create_app(toy_predictor, model_name="BioCAP-toy", max_upload_mb=MAX_UPLOAD_MB)
    )


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
        assert [p["score"] for p in group["predictions"]] == pytest.approx(
            [r["score"] for r in expected], abs=1e-5
        )
        scores = [p["score"] for p in group["predictions"]]
        assert scores == sorted(scores, reverse=True) and len(scores) <= 3


def test_predict_returns_the_captions_the_library_finds(client, toy_predictor, photo):
    captions = post(client, photo["name"], photo["bytes"]).json()["captions"]
    expected = toy_predictor.nearest_captions([(photo["name"], photo["bytes"])], k=5)[0]
    assert [c["caption"] for c in captions] == [c["caption"] for c in expected]
    assert [c["score"] for c in captions] == pytest.approx([c["score"] for c in expected], abs=1e-5)


def test_rollup_prior_and_several_photos_answer_as_the_library_does(
    client, toy_predictor, photo, zeroshot_images
):
    genus = toy_predictor.predict([photo["path"]], rank="genus", k=2)[1]["genus"]
    prior = f"rank,name,weight\ngenus,{genus},30\n"
    response = post(client, photo["name"], photo["bytes"], rollup="0.3", prior=prior)
    assert response.status_code == 200, response.text
    row = toy_predictor.predict(
        [(photo["name"], photo["bytes"])], rank="genus", k=1, rollup=0.3, prior=prior
    )[0]
    assert response.json()["rollup"] == {
        "rank": row["rollup_rank"],
        "name": row["rollup"],
        "score": pytest.approx(row["rollup_score"], abs=1e-5),
    }
    assert response.json()["taxa"][-2]["predictions"][0]["name"] == row["genus"]

    other = zeroshot_images[1][0]
    files = [
        ("image", (photo["name"], photo["bytes"])),
        ("image", (other.name, other.read_bytes())),
    ]
    combined = client.post("/api/predict", files=files, data={"k": "2"}).json()
    expected = toy_predictor.predict_observations(
        {"upload": [(photo["name"], photo["bytes"]), (other.name, other.read_bytes())]},
        rank="species",
        k=2,
    )
    assert combined["photos"] == [photo["name"], other.name]
    species = combined["taxa"][-1]["predictions"]
    assert [p["name"] for p in species] == [r["species"] for r in expected]
    assert [p["score"] for p in species] == pytest.approx([r["score"] for r in expected], abs=1e-5)
    assert "rollup" in combined and combined["rollup"] is None  # none asked for


def test_a_bad_prior_or_rollup_is_a_422_naming_it(client, photo):
    response = post(client, photo["name"], photo["bytes"], prior="rank,name\ngenus,X\n")
    assert response.status_code == 422 and "rank, name, weight" in response.json()["detail"]
    response = post(client, photo["name"], photo["bytes"], rollup="1.5")
    assert response.status_code == 422 and "rollup" in response.json()["detail"]


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
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="huge.jpg"\r\n\r\n'
        for _ in range(int(MAX_UPLOAD_MB * 16) + 4):
            yield b"\xff" * 65536

    response = client.post(
        "/api/predict",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 413
    assert "too large" in response.json()["detail"]


def png_of(width: int, height: int) -> bytes:
    """A valid grayscale PNG of ``width`` x ``height`` black pixels, compressed row by row: a few
    hundred kilobytes for 11,000 x 11,000 pixels, which take 121 MB once decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    packer, row = zlib.compressobj(9), b"\0" * (width + 1)  # filter byte + one byte a pixel
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def test_a_photo_of_too_many_pixels_is_413_from_its_header_without_decoding_it(client, monkeypatch):
    from PIL import ImageFile

    data = png_of(11_000, 11_000)
    assert len(data) < MAX_UPLOAD_MB * 2**20  # small in bytes: the byte limit lets it through
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: decoded.append(im.size))
    response = post(client, "bomb.png", data)
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert "bomb.png" in detail and "11,000 x 11,000" in detail
    assert "at most 40 megapixels" in detail
    assert decoded == []  # refused from the header: no pixel was decoded


def test_the_pixel_cap_is_the_servers_setting(toy_predictor, photo):
    from PIL import Image

    width, height = Image.open(io.BytesIO(photo["bytes"])).size
    for cap, status in ((width * height - 1, 413), (width * height, 200)):
        app = create_app(toy_predictor, max_upload_pixels=cap)
        response = post(TestClient(app), photo["name"], photo["bytes"])
        assert response.status_code == status, response.text
    assert TestClient(app).get("/api/health").json()["max_upload_pixels"] == width * height


@pytest.mark.parametrize("slots", [1, 2])
def test_uploads_are_decoded_a_few_at_a_time(slots, toy_predictor, photo, monkeypatch):
    """Four uploads at once: never more than ``max_decodes`` decode together, and all answer."""
    import biocap_predict.web as web

    decode, inside, peak, lock = web._decode, [0], [0], threading.Lock()
    full = threading.Event()

    def counted(*args):
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
            if inside[0] == slots:
                full.set()
        full.wait(timeout=3)  # hold the slot until as many decodes as allowed run together
        try:
            return decode(*args)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(web, "_decode", counted)
    client = TestClient(create_app(toy_predictor, max_decodes=slots))
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: post(client, photo["name"], photo["bytes"]), range(4)))
    codes = [r.status_code for r in responses]
    assert codes == [200] * 4
    assert peak[0] == slots


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
    assert not any(
        re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import|@font-face", t) for t in texts
    )
    assert (
        client.get("/docs").status_code == 404
    )  # FastAPI's docs page would load Swagger UI from a CDN


def test_the_web_module_says_how_to_install_the_extra_when_fastapi_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # makes `import fastapi` raise ImportError
    monkeypatch.delitem(sys.modules, "biocap_predict.web")
    with pytest.raises(ImportError, match=re.escape("pip install 'biocap-predict[web]'")):
        importlib.import_module("biocap_predict.web")


def test_the_reference_photos_of_the_answer_are_served(referenced_predictor, photo):
    client = TestClient(create_app(referenced_predictor))
    assert client.get("/api/health").json()["references"] is True
    result = post(client, photo["name"], photo["bytes"], k="2").json()
    top = result["taxa"][-1]["predictions"][0]["name"]
    assert [r["species"] for r in result["references"]] == [top, top]
    served = client.get("/" + result["references"][0]["url"])
    assert served.status_code == 200
    (path,) = [
        p
        for i, p in enumerate(referenced_predictor.references.paths)
        if result["references"][0]["url"].endswith(f"/{i}")
    ]
    assert served.content == open(path, "rb").read()
    assert client.get("/api/reference/100000").status_code == 404
