"""`biocap-eval run|report|list` end to end on the toy tree of life: result files, skipping, cache,
report."""

from __future__ import annotations

import csv
import json
import os

import pytest
import torch
from typer.testing import CliRunner

from biocap_core.checkpoints import save_weights
from biocap_eval.api import evaluate
from biocap_eval.cli import app
from biocap_eval.registry import load_registry
from biocap_eval.runner import ModelSpec, RunOptions, run
from biocap_eval.tasks import EvalError, Settings

TOY = ["toy-zeroshot", "toy-zeroshot-asis", "toy-inquire", "toy-retrieval"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def checkpoint(tiny_model, tmp_path):
    return save_weights(tiny_model, tmp_path / "tiny.safetensors")


def test_run_writes_one_result_per_benchmark_then_skips_them(
    toy_dir, tiny_json, checkpoint, tmp_path
):
    out = tmp_path / "results"
    base = [
        "run",
        "--model",
        tiny_json,
        "--pretrained",
        checkpoint,
        "--data-root",
        toy_dir,
        "-b",
        "toy",
        "--out",
        out,
        "--workers",
        0,
        "--quiet",
        "--per-class",
    ]
    first = invoke(*base)
    assert first.exit_code == 0, first.output
    files = {p.stem: p for p in (out / "tiny_tiny").glob("*.json")}
    assert sorted(files) == sorted(TOY)
    doc = json.loads(files["toy-zeroshot"].read_text())
    assert (
        doc["model"]["identity"]["pretrained"] == str(checkpoint)
        and doc["model"]["label"] == "tiny/tiny"
    )
    assert doc["settings"]["label_type"] == "taxon_com" and len(doc["settings"]["templates"]) == 81
    assert set(doc["metrics"]) == {"top1", "top3", "top5", "mean_per_class_recall"}
    assert len(doc["details"]["per_class"]) == 12
    assert {"biocap-eval", "biocap-core", "torch", "python"} <= set(doc["versions"])
    # the asis benchmark reads the same images: all from the embedding cache
    asis = json.loads(files["toy-zeroshot-asis"].read_text())
    assert (doc["run"]["images_encoded"], asis["run"]["images_encoded"]) == (48, 0)

    stamps = {name: p.stat().st_mtime_ns for name, p in files.items()}
    again = invoke(*base)
    assert again.exit_code == 0 and "loading" not in again.output
    assert again.output.count("finished earlier") == 4
    assert {name: p.stat().st_mtime_ns for name, p in files.items()} == stamps

    changed = invoke(
        *base, "--retrieval-prefix", ""
    )  # a setting of one task: only that task re-runs
    assert (
        changed.output.count("finished earlier") == 3 and "toy-retrieval: running" in changed.output
    )
    assert json.loads(files["toy-retrieval"].read_text())["settings"]["prefix"] == ""
    forced = invoke(*base, "--retrieval-prefix", "", "--force", "-b", "toy-inquire")
    assert "finished earlier" not in forced.output
    assert files["toy-inquire"].stat().st_mtime_ns != stamps["toy-inquire"]


def test_embeddings_are_reused_across_runs_and_re_encoded_when_a_file_changes(
    toy_dir, tiny_model, tmp_path
):
    reg = load_registry()
    spec = ModelSpec("tiny", name="tiny")
    cache = tmp_path / "cache"

    def once(name):
        options = RunOptions(data_root=toy_dir, out_dir=tmp_path / name, cache_dir=cache)
        run(spec, [reg["toy-retrieval"]], Settings(), options, log=lambda _: None, model=tiny_model)
        return json.loads((tmp_path / name / "tiny" / "toy-retrieval.json").read_text())

    fresh, cached = once("a"), once("b")
    assert (fresh["run"]["images_encoded"], cached["run"]["images_encoded"]) == (24, 0)
    assert cached["metrics"] == fresh["metrics"]
    image = toy_dir / "retrieval" / "images" / "100000.jpg"
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert once("c")["run"]["images_encoded"] == 1
    with torch.no_grad():
        tiny_model.visual.proj.add_(0.5)  # other weights: another fingerprint, nothing cached
    assert once("d")["run"]["images_encoded"] == 24


def test_report_lays_out_models_by_benchmarks_with_the_mean_last(toy_dir, tiny_json, tmp_path):
    out = tmp_path / "results"
    for name, head in (("alpha", "tax"), ("beta", "caption")):
        result = invoke(
            "run",
            "--model",
            tiny_json,
            "--name",
            name,
            "--head",
            head,
            "--data-root",
            toy_dir,
            "-b",
            "toy-zeroshot,toy-retrieval",
            "--out",
            out,
            "--workers",
            0,
            "--quiet",
        )
        assert result.exit_code == 0, result.output
    report = invoke("report", out)
    assert report.exit_code == 0, report.output
    md = (out / "report.md").read_text()
    assert (
        "| Model | Toy (taxon_com) | Mean |" in md and "| Model | Toy I2T | Toy T2I | Mean |" in md
    )
    rows = list(csv.DictReader((out / "report_retrieval.csv").open()))
    assert [r["model"] for r in rows] == ["alpha", "beta"]
    beta = json.loads((out / "beta" / "toy-retrieval.json").read_text())["metrics"]
    assert float(rows[1]["Toy I2T"]) == pytest.approx(beta["i2t_R@1"], abs=1e-4)
    assert float(rows[1]["Mean"]) == pytest.approx(
        (beta["i2t_R@1"] + beta["t2i_R@1"]) / 2, abs=1e-4
    )
    long = list(csv.DictReader((out / "results_long.csv").open()))
    assert len(long) == 2 * (4 + 6) and set(long[0]) == {
        "model",
        "benchmark",
        "task",
        "metric",
        "value",
    }
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_of_a_folder_without_results_fails(tmp_path):
    result = invoke("report", tmp_path)
    assert result.exit_code == 1 and "no biocap-eval result files" in result.output


def test_run_errors_name_what_is_wrong(toy_dir, tiny_json, tmp_path):
    unknown = invoke(
        "run", "--model", tiny_json, "--data-root", toy_dir, "-b", "nabird", "--out", tmp_path
    )
    assert unknown.exit_code == 1 and "unknown benchmark 'nabird'" in unknown.output
    nothing = invoke(
        "run", "--model", tiny_json, "--data-root", tmp_path, "-b", "all", "--out", tmp_path
    )
    assert nothing.exit_code == 1 and "none of ['all'] can run" in nothing.output
    assert "toy-zeroshot: not run (missing" in nothing.output
    absent = invoke(
        "run",
        "--model",
        tiny_json,
        "--data-root",
        tmp_path,
        "-b",
        "toy-retrieval",
        "--out",
        tmp_path / "r",
        "--workers",
        0,
        "--quiet",
    )
    assert absent.exit_code == 1 and "toy_retrieval.csv: no such file" in absent.output
    assert "1 benchmark(s) failed: toy-retrieval" in absent.output
    bad_head = invoke(
        "run", "--model", tiny_json, "--head", "both", "--data-root", toy_dir, "--out", tmp_path
    )
    assert bad_head.exit_code == 2 and "--head must be tax or caption" in bad_head.output


def test_a_training_checkpoint_is_a_model_by_itself(toy_dir, tiny_model, tmp_path):
    ckpt = tmp_path / "step_00000003.pt"  # as biocap-train writes them: it carries its model config
    torch.save(
        {"step": 3, "state_dict": tiny_model.state_dict(), "model_cfg": tiny_model.model_cfg}, ckpt
    )
    result = invoke(
        "run",
        "--model",
        ckpt,
        "--data-root",
        toy_dir,
        "-b",
        "toy-retrieval",
        "--out",
        tmp_path / "r",
        "--workers",
        0,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "r" / "step_00000003" / "toy-retrieval.json").read_text())
    assert doc["metrics"] == pytest.approx(
        evaluate(tiny_model, ["toy-retrieval"], toy_dir)["toy-retrieval"].metrics
    )
    bare = save_weights(tiny_model, tmp_path / "bare.safetensors")
    refused = invoke(
        "run",
        "--model",
        bare,
        "--data-root",
        toy_dir,
        "-b",
        "toy-retrieval",
        "--out",
        tmp_path / "r",
    )
    assert refused.exit_code == 1 and "holds no model config" in refused.output
    assert f"--model ViT-B-16 --pretrained {bare}" in refused.output


def test_templates_file(tmp_path, toy_dir, tiny_json):
    good = tmp_path / "t.txt"
    good.write_text("# mine\na photo of {}.\n\nitap of a {}.\n")
    assert Settings().with_templates(good).templates == ("a photo of {}.", "itap of a {}.")
    as_json = tmp_path / "t.json"
    as_json.write_text(json.dumps(["{}", "a {} in the wild"]))
    assert Settings().with_templates(as_json).templates == ("{}", "a {} in the wild")
    bad = tmp_path / "bad.txt"
    bad.write_text("a photo of {}.\na photo of {c}.\nno slot\n")
    with pytest.raises(EvalError, match=r"bad.txt: template\(s\) at line/item \[2, 3\]"):
        Settings().with_templates(bad)
    result = invoke(
        "run",
        "--model",
        tiny_json,
        "--data-root",
        toy_dir,
        "-b",
        "toy-zeroshot",
        "--out",
        tmp_path / "r",
        "--workers",
        0,
        "--quiet",
        "--templates",
        good,
    )
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "r" / "tiny" / "toy-zeroshot.json").read_text())
    assert doc["settings"]["templates"] == ["a photo of {}.", "itap of a {}."]


def test_an_undecodable_image_fails_only_its_benchmark_with_strict_and_is_skipped_without(
    toy_dir, tiny_json, tmp_path
):
    import shutil

    data = shutil.copytree(toy_dir, tmp_path / "data")
    broken = data / "retrieval" / "images" / "100000.jpg"
    broken.write_bytes(broken.read_bytes()[:200])
    out = tmp_path / "results"
    base = [
        "run",
        "--model",
        tiny_json,
        "--data-root",
        data,
        "-b",
        "toy-retrieval,toy-zeroshot",
        "--out",
        out,
        "--workers",
        0,
        "--quiet",
    ]
    strict = invoke(*base, "--strict")
    assert strict.exit_code == 1 and isinstance(strict.exception, SystemExit), strict.output
    assert (
        f"toy-retrieval: FAILED: {data / 'retrieval' / 'toy_retrieval.csv'}: 1 image(s) cannot be"
        f" decoded; first: {broken}" in strict.output
    )
    assert "1 benchmark(s) failed: toy-retrieval" in strict.output
    assert (out / "tiny" / "toy-zeroshot.json").is_file()  # the benchmark after it still ran
    lenient = invoke(*base)
    assert lenient.exit_code == 0, lenient.output
    assert "1 undecodable image(s) skipped, named in the result" in lenient.output
    doc = json.loads((out / "tiny" / "toy-retrieval.json").read_text())
    assert doc["counts"]["unreadable"] == 1 and doc["counts"]["pairs"] == 23
    assert list(doc["details"]["unreadable"]) == [str(broken)]


def test_an_unwritable_cache_is_warned_about_once_and_the_run_goes_on(
    toy_dir, tiny_model, tmp_path, caplog
):
    reg = load_registry()
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder should be")
    options = RunOptions(data_root=toy_dir, out_dir=tmp_path / "out", cache_dir=blocked)
    summary = run(
        ModelSpec("tiny", name="tiny"),
        [reg["toy-retrieval"], reg["toy-zeroshot"]],
        Settings(),
        options,
        log=lambda _: None,
        model=tiny_model,
    )
    assert sorted(summary.paths) == ["toy-retrieval", "toy-zeroshot"] and not summary.failed
    warnings = [r.getMessage() for r in caplog.records if "cache" in r.getMessage()]
    assert len(warnings) == 1 and str(blocked) in warnings[0] and "Not a directory" in warnings[0]


def test_an_out_folder_that_cannot_be_made_is_one_line(toy_dir, tiny_json, tmp_path):
    blocker = tmp_path / "plain-file"
    blocker.write_text("")
    result = invoke(
        "run",
        "--model",
        tiny_json,
        "--data-root",
        toy_dir,
        "-b",
        "toy-retrieval",
        "--out",
        blocker / "results",
        "--workers",
        0,
        "--quiet",
    )
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert (
        f"error: cannot create the results folder {blocker / 'results'}: {blocker} is a file"
        in result.output
    )
    assert "Traceback" not in result.output and "loading" not in result.output


def test_gpu_decode_is_refused_off_cuda_before_the_model_loads(toy_dir, tiny_json, tmp_path):
    refused = invoke(
        "run",
        "--model",
        tiny_json,
        "--data-root",
        toy_dir,
        "-b",
        "toy-zeroshot",
        "--out",
        tmp_path,
        "--device",
        "cpu",
        "--gpu-decode",
        "--quiet",
    )
    assert refused.exit_code == 1 and isinstance(refused.exception, SystemExit)
    assert "error: --gpu-decode needs CUDA" in refused.output and "loading" not in refused.output
    from biocap_core.errors import GpuDecodeUnavailable

    with pytest.raises(GpuDecodeUnavailable, match="--gpu-decode needs CUDA"):
        evaluate(tiny_json, ["toy-zeroshot"], toy_dir, device="cpu", gpu_decode=True)
