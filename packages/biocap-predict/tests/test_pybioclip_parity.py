"""Side by side with pybioclip itself: pybioclip 2.1.6, installed from PyPI in a venv of its own,
and biocap-predict's classes, on the same weights (the toy model exported as an OpenCLIP folder,
which both load as ``local-dir:``) and the same text embeddings (pybioclip's ``txt_emb_species``
files), give the same rows at every rank, for custom labels and for bins, with scores within 1e-4.
The venv is kept between runs (``~/.cache/biocap/test-venvs/pybioclip``)."""

from __future__ import annotations

import json
import subprocess

import pytest
from biocap_predict import (
    CustomLabelsBinningClassifier,
    CustomLabelsClassifier,
    Rank,
    TreeOfLifeClassifier,
)
from PIL import Image

pytestmark = pytest.mark.slow

PYBIOCLIP = "pybioclip==2.1.6"
TOLERANCE = 1e-4

#: Run by the pybioclip venv's Python; prints its rows as JSON.
PYBIOCLIP_SIDE = """
import json, os, sys
from bioclip.predict import (CustomLabelsBinningClassifier, CustomLabelsClassifier, Rank,
                             TreeOfLifeClassifier)

args = json.loads(sys.argv[1])
model, images = args["model"], args["images"]
# pybioclip downloads the text embeddings of its two BioCLIP models from the Hub; the toy's are
# in the same files here
TreeOfLifeClassifier.get_cached_datafile = \
    lambda self, name: os.path.join(args["tol"], os.path.basename(name))
tree = TreeOfLifeClassifier(model_str=model)
out = {rank: tree.predict(images, Rank[rank.upper()], k=args["k"]) for rank in args["ranks"]}
out["labels"] = CustomLabelsClassifier(args["labels"], model_str=model).predict(images)
out["bins"] = CustomLabelsBinningClassifier(args["bins"], model_str=model).predict(images)
print(json.dumps(out))
"""


@pytest.fixture
def images(zeroshot_images, tmp_path) -> list[str]:
    """Toy photos as they are (64 x 64 JPEGs), one enlarged to a 480 x 360 JPEG (which a decoder in
    draft mode would decode at half size) and one as an RGBA PNG."""
    paths = [str(p) for p, _ in zeroshot_images[::16][:4]]
    with Image.open(paths[0]) as photo:
        photo.resize((480, 360), Image.BICUBIC).save(tmp_path / "large.jpg", quality=90)
        photo.convert("RGBA").save(tmp_path / "rgba.png")
    return [*paths, str(tmp_path / "large.jpg"), str(tmp_path / "rgba.png")]


def largest_difference(ours: list[dict], theirs: list[dict], what: str) -> float:
    """Rows equal but for the scores; the largest score difference."""
    assert [{k: v for k, v in r.items() if k != "score"} for r in ours] == \
        [{k: v for k, v in r.items() if k != "score"} for r in theirs], what
    return max(abs(a["score"] - b["score"]) for a, b in zip(ours, theirs, strict=True))


def test_rows_and_scores_equal_pybioclips_on_the_same_weights(scratch_venv, open_clip_toy, images,
                                                              photo, tmp_path):
    venv = scratch_venv("pybioclip", keep=True)  # made once, then reused
    venv.install(PYBIOCLIP, constraints_of="biocap-predict")
    labels = [photo["scientific"], *photo["others"], "a photo of a cat"]
    bins = dict(zip(labels, ["right", "other", "other", "other", "cat"], strict=True))
    args = {"model": open_clip_toy.model, "tol": str(open_clip_toy.tol), "images": images, "k": 5,
            "ranks": [rank.get_label() for rank in Rank], "labels": labels, "bins": bins}
    # TORCHDYNAMO_DISABLE: pybioclip torch.compile()s the model; the same weights run eagerly
    env = {**venv.env, "TORCHDYNAMO_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([str(venv.python), "-c", PYBIOCLIP_SIDE, json.dumps(args)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = json.loads(done.stdout.splitlines()[-1])

    tree = TreeOfLifeClassifier(model_str=open_clip_toy.model, index=open_clip_toy.index)
    ours = {rank.get_label(): tree.predict(images, rank, k=5) for rank in Rank}
    model = open_clip_toy.model
    ours["labels"] = CustomLabelsClassifier(labels, model_str=model).predict(images)
    ours["bins"] = CustomLabelsBinningClassifier(bins, model_str=model).predict(images)
    assert set(ours) == set(theirs)
    worst = {what: largest_difference(ours[what], theirs[what], what) for what in ours}
    print(f"largest score difference from {PYBIOCLIP}: {max(worst.values()):.2e} ({worst})")
    assert max(worst.values()) <= TOLERANCE, worst
