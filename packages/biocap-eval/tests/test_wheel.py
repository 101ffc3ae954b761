"""biocap-eval installs alone: wheels of biocap-core and biocap-eval into a fresh venv, outside the
workspace (the root conftest's ``install_alone``), and its commands run there."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow
FORBIDDEN = ("biocap-train", "biocap-captions", "biocap-wiki", "vllm", "scrapy")


def test_wheels_install_alone_and_run_the_toy_benchmarks(install_alone, tmp_path, toy_dir):
    installed = install_alone("biocap-eval")
    out = tmp_path / "results"  # a core model name: resolves with eval installed alone
    probe = installed.run(
        [
            [
                "run",
                "--model",
                "BioCAP-toy",
                "--data-root",
                str(toy_dir),
                "--benchmarks",
                "toy",
                "--out",
                str(out),
                "--workers",
                "0",
                "--quiet",
            ],
            ["report", str(out)],
        ]
    )
    assert {"biocap-core", "biocap-eval", "torch", "matplotlib"} <= set(probe["installed"])
    assert not set(FORBIDDEN) & set(probe["installed"])
    assert "datasets" not in probe["installed"]  # the [hf] extra stays optional
    assert probe["module"].startswith(str(installed.venv))
    ran, reported = probe["runs"]
    assert ran[0] == 0, ran
    results = {p.stem: json.loads(p.read_text()) for p in (out / "BioCAP-toy").glob("*.json")}
    assert sorted(results) == [
        "toy-inquire",
        "toy-retrieval",
        "toy-zeroshot",
        "toy-zeroshot-asis",
    ], ran
    assert results["toy-inquire"]["versions"]["biocap-eval"] == "0.1.0"
    assert reported[0] == 0 and "| Model |" in reported[1] and (out / "report.png").is_file(), (
        reported
    )
