"""The demo page end to end: the real ``biocap-predict serve`` command, driven in Debian's Chromium.

Without /usr/bin/chromium the browser test skips, except on CI (``CI=true``), where it fails so that
a missing install step in .ci/run cannot pass silently. Playwright drives the system Chromium; it
never downloads a browser of its own.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from biocap_core.taxonomy import RANKS

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and quiet on the network: no sync, component updates, QUIC probes or first-run pings.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
URL_LINE = re.compile(r"BioCAP demo page: (http://\S+)")
K = 5
#: Low enough for the briefly trained toy model to be that sure of some rank below the kingdom.
ROLLUP = "0.3"


def skip_or_fail(reason: str):
    """Skip on a developer's machine; fail on CI, where the browser must be there."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: .ci/run must install it)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def server(referenced_predictor, trained_checkpoint, tmp_path_factory):
    """``biocap-predict serve --port 0`` as a subprocess, on the toy index with reference photos;
    yields the URL it printed."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [
        str(Path(sys.executable).with_name("biocap-predict")),
        "serve",
        "--index",
        str(referenced_predictor.index.path),
        "--model",
        "BioCAP-toy",
        "--pretrained",
        str(trained_checkpoint),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--device",
        "cpu",
        "--rollup",
        ROLLUP,
    ]
    with log.open("w") as out:  # a file, not a pipe: the access log must never block the server
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not (found := URL_LINE.search(log.read_text())):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"serve did not print its URL (exit code {process.poll()}):\n{log.read_text()}"
                )
            time.sleep(0.2)
        yield found.group(1)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def api_predict(url: str, path: Path, **fields: str) -> dict:
    """What /api/predict answers for ``path`` (and form ``fields``), posted by hand as a multipart
    form."""
    boundary = "biocap-test-boundary"
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    )
    body += (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image";'
            f' filename="{path.name}"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        url + "api/predict",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def test_serve_on_port_0_prints_a_url_that_answers(server, photo):
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", server) and not server.endswith(":0/")
    with urllib.request.urlopen(server + "api/health", timeout=30) as response:
        assert json.load(response)["status"] == "ok"
    assert (
        api_predict(server, photo["path"])["taxa"][-1]["predictions"][0]["name"]
        == photo["scientific"]
    )


def test_the_page_in_chromium(server, photo, tmp_path):
    if not CHROMIUM.exists():
        skip_or_fail(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed")
    expected = api_predict(server, photo["path"])

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            user_data_dir=tmp_path / "chromium-profile",
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = browser.new_page()
            page.goto(server)
            expect(page.locator("#model")).to_contain_text("BioCAP-toy")

            # a photo: preview, one table per rank with the true species on top, the nearest
            # captions
            page.set_input_files("#file", photo["path"])
            expect(page.locator("#taxa-results")).to_be_visible(timeout=60_000)
            assert page.locator("#preview").evaluate("img => img.complete && img.naturalWidth > 0")
            assert page.locator(".rank").evaluate_all("s => s.map(x => x.dataset.rank)") == list(
                RANKS
            )
            species = page.locator('.rank[data-rank="species"] tr')
            expect(species).to_have_count(K)
            expect(species.first.locator(".name i")).to_have_text(photo["scientific"])
            expect(page.locator(".verdict")).to_contain_text(photo["scientific"])
            # the rollup line: the deepest rank the model is 30% sure of, as the API says
            rolled = api_predict(server, photo["path"], rollup=ROLLUP)["rollup"]
            assert rolled["rank"] != "kingdom"
            expect(page.locator(".rollup")).to_have_text(
                f"confidently: {rolled['rank']} {rolled['name']} ({100 * rolled['score']:.1f}%)"
            )
            top_bar = species.first.locator(".fill").evaluate(
                "e => e.getBoundingClientRect().width"
            )
            assert top_bar > 0
            expect(page.locator("#captions .caption")).to_have_text(
                [c["caption"] for c in expected["captions"]]
            )
            # the compare strip: the photo, and the reference photos of the answer, drawn
            references = page.locator("#references img")
            expect(references).to_have_count(len(expected["references"]))
            assert expected["references"]
            assert references.evaluate_all("s => s.every(i => i.complete && i.naturalWidth > 0)")
            expect(page.locator("#references figcaption").first).to_contain_text(
                photo["scientific"]
            )
            screenshot = tmp_path / "predict-page.png"
            page.screenshot(path=screenshot, full_page=True)
            print(f"screenshot: {screenshot}")

            # a bad upload: a clear message instead of results, and the page still works after it
            page.set_input_files(
                "#file",
                files=[
                    {
                        "name": "notes.txt",
                        "mimeType": "text/plain",
                        "buffer": b"field notes, not a photo",
                    }
                ],
            )
            expect(page.locator("#error")).to_be_visible()
            expect(page.locator("#error")).to_contain_text("notes.txt")
            expect(page.locator("#taxa-results")).to_be_hidden()
            page.set_input_files("#file", photo["path"])
            expect(page.locator("#error")).to_be_hidden()
            expect(page.locator("#taxa-results")).to_be_visible(timeout=60_000)
            expect(species.first.locator(".name i")).to_have_text(photo["scientific"])

            # two photos at once: one observation, named as the API names it
            other = next(
                p for p in photo["path"].parent.parent.rglob("*.jpg") if p != photo["path"]
            )
            page.set_input_files("#file", [photo["path"], other])
            expect(page.locator("#file-name")).to_contain_text("2 photos of one organism")
            expect(page.locator("#status")).to_have_text("", timeout=60_000)
            expect(page.locator("#error")).to_be_hidden()
            expect(page.locator("#taxa-results")).to_be_visible()
            page.set_input_files("#file", photo["path"])
            expect(page.locator("#status")).to_have_text("", timeout=60_000)

            # custom labels: the photo's own species among others comes first
            page.click("#tab-labels")
            page.fill("#labels", "\n".join([*photo["others"], photo["scientific"]]))
            page.click("#classify")
            expect(page.locator("#labels-results")).to_be_visible()
            expect(page.locator("#labels-table tr")).to_have_count(4)
            expect(page.locator("#labels-table tr").first.locator(".name")).to_have_text(
                photo["scientific"]
            )
            labels_screenshot = tmp_path / "predict-page-labels.png"
            page.screenshot(path=labels_screenshot, full_page=True)
            print(f"screenshot: {labels_screenshot}")
        finally:
            browser.close()
