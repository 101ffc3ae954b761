"""Rollup, regional priors and observations on the toy tree of life, against probabilities computed
here by hand from each photo's full species distribution (the predictor's species rows with k as
large as the index)."""

from __future__ import annotations

import math

import polars as pl
import pytest
from typer.testing import CliRunner

from biocap_core.taxonomy import RANKS
from biocap_predict.cli import app
from biocap_predict.errors import PredictInputError
from biocap_predict.outputs import read_rows
from biocap_predict.priors import Prior

LINEAGE = list(RANKS[:-1])


@pytest.fixture(scope="module")
def photos(zeroshot_images) -> list[str]:
    return [str(p) for p, _ in zeroshot_images[:5]]


@pytest.fixture(scope="module")
def species_probs(toy_predictor, photos, n_species) -> pl.DataFrame:
    """Every photo's probability of every species: file_name, the lineage, species, p."""
    rows = toy_predictor.predict(photos, rank="species", k=n_species)
    return pl.DataFrame(rows).select("file_name", *LINEAGE, "species", p="score")


def best_per_rank(probs: pl.DataFrame, photo: str) -> dict[str, tuple[str, float]]:
    """Per rank, the best taxon's name and probability: species summed along the lineage."""
    mine = probs.filter(pl.col("file_name") == photo)
    out = {}
    for level, rank in enumerate(RANKS):
        keys = LINEAGE[: level + 1] if rank != "species" else ["species"]
        top = mine.group_by(keys).agg(pl.col("p").sum()).sort("p", descending=True).row(0)
        out[rank] = (top[-2], top[-1])
    return out


def test_rollup_is_the_deepest_rank_that_reaches_the_threshold(
    toy_predictor, photos, species_probs
):
    for photo in photos[:3]:
        best = best_per_rank(species_probs, photo)
        # thresholds halfway between the ranks' best probabilities (ranks within float error of
        # each other, e.g. a phylum of one big class, are not told apart), and above them all
        values = sorted({round(p, 4) for _, p in best.values()})
        halfway = [(a + b) / 2 for a, b in zip([0.0, *values], values)]
        for threshold in [*halfway, (values[-1] + 1) / 2]:
            expected = next((r for r in reversed(RANKS) if best[r][1] >= threshold), None)
            rows = toy_predictor.predict([photo], rank="genus", k=2, rollup=threshold)
            got = {(r["rollup_rank"], r["rollup"], r["rollup_score"]) for r in rows}
            assert len(got) == 1  # the same on every row of the photo
            rank, name, score = got.pop()
            if expected is None:
                assert (rank, name, score) == ("", "", None)
            else:
                assert (rank, name) == (expected, best[expected][0])
                assert score == pytest.approx(best[expected][1], abs=1e-5)


def test_the_rollup_ignores_min_prob(toy_predictor, photos):
    def rolled(**kwargs):
        rows = toy_predictor.predict(photos[:2], rank="species", k=2, rollup=0.3, **kwargs)
        return [(r["rollup_rank"], r["rollup"], round(r["rollup_score"], 5)) for r in rows]

    assert rolled(min_prob=0.05) == rolled()


def test_without_the_options_the_rows_keep_their_columns(toy_predictor, photos):
    plain = toy_predictor.predict(photos[:1], rank="all", k=2)
    rolled = toy_predictor.predict(photos[:1], rank="all", k=2, rollup=0.5)
    assert "rollup" not in plain[0]
    assert [{k: r[k] for k in plain[0]} for r in rolled] == plain


@pytest.mark.parametrize("missing", [None, 0.5])
def test_a_prior_multiplies_and_renormalises(
    toy_predictor, photos, species_probs, n_species, missing
):
    taxa = species_probs.filter(pl.col("file_name") == photos[0])
    genus, family = taxa["genus"][5], taxa["family"][20]
    species = taxa.filter(pl.col("genus") == genus)["species"][0]
    prior = pl.DataFrame(
        {
            "rank": ["family", "genus", "species"],
            "name": [family, genus, species],
            "weight": ["4", "20", "2"],
        }
    )

    def weight(row: dict) -> float:  # the deepest taxon named decides; others get the smallest
        if row["species"] == species:
            return 2.0
        if row["genus"] == genus:
            return 20.0
        if row["family"] == family:
            return 4.0
        return 2.0 if missing is None else missing  # by default the smallest weight of the prior

    weighted = species_probs.with_columns(
        p=pl.col("p") * pl.struct("species", "genus", "family").map_elements(weight, pl.Float64)
    ).with_columns(p=pl.col("p") / pl.col("p").sum().over("file_name"))
    got = toy_predictor.predict(
        photos, rank="all", k=n_species, prior=Prior.read(prior, missing=missing)
    )
    for photo in photos:
        rows = [r for r in got if r["file_name"] == photo]
        mine = weighted.filter(pl.col("file_name") == photo)
        for rank in ("species", "genus", "family"):
            keys = LINEAGE[: RANKS.index(rank) + 1] if rank != "species" else ["species"]
            expected = dict(mine.group_by(keys[-1]).agg(pl.col("p").sum()).iter_rows())
            scores = {r[rank]: r["score"] for r in rows if r["rank"] == rank}
            for name, p in expected.items():
                assert scores[name] == pytest.approx(p, abs=1e-5), (photo, rank, name)


def test_a_prior_naming_nothing_in_the_index_or_a_zero_weight_is_refused(toy_predictor, photos):
    with pytest.raises(PredictInputError, match="none of its 1 taxa is in the index"):
        toy_predictor.predict(photos[:1], prior=Prior({("genus", "nogenus"): 3.0}))
    with pytest.raises(PredictInputError, match="positive"):
        Prior.read("rank,name,weight\ngenus,Putiia,0\n")


def test_an_observation_is_the_renormalised_mean_of_its_photos_log_probabilities(
    toy_predictor, photos, species_probs
):
    groups = {"bird-1": photos[:3], "bird-2": photos[3:5]}
    got = toy_predictor.predict_observations(groups, rank="species", k=5, rollup=0.2)
    for obs, members in groups.items():
        mean_log = (
            species_probs.filter(pl.col("file_name").is_in(members))
            .group_by("species")
            .agg(pl.col("p").log().mean())
            .with_columns(p=pl.col("p").exp())
            .with_columns(p=pl.col("p") / pl.col("p").sum())
            .sort("p", descending=True)
        )
        rows = [r for r in got if r["observation"] == obs]
        assert [r["species"] for r in rows] == mean_log["species"][:5].to_list()
        for r, p in zip(rows, mean_log["p"]):
            assert r["score"] == pytest.approx(p, abs=1e-5)
            assert r["photos"] == ";".join(members)
        assert rows[0]["rollup_score"] >= 0.2


def test_an_observation_whose_photos_cannot_be_read_is_reported(toy_predictor, photos, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a photo")
    skipped = []
    rows = toy_predictor.predict_observations(
        {"a": [str(bad)], "b": [photos[0], str(bad)]}, rank="species", k=1, on_skip=skipped.append
    )
    assert [(r["observation"], r["photos"]) for r in rows] == [("b", photos[0])]
    assert any("observation a" in str(e) for e in skipped)


@pytest.mark.slow
def test_the_cli_groups_rolls_up_and_weighs_like_the_api(
    toy_predictor, photos, trained_checkpoint, toy_index, tmp_path
):
    listing = tmp_path / "observations.csv"
    pl.DataFrame({"path": photos[:4], "obs": ["x", "y", "x", "y"]}).write_csv(listing)
    prior = tmp_path / "prior.csv"
    genus = toy_predictor.predict(photos[:1], rank="genus", k=3)[2]["genus"]
    prior.write_text(f"rank,name,weight\ngenus,{genus},50\n")
    out = tmp_path / "out.csv"
    args = ["predict", "--from-list", listing, "--group-by", "obs", "--index", toy_index]
    args += ["--model", "BioCAP-toy", "--pretrained", trained_checkpoint, "--device", "cpu"]
    args += ["--quiet", "--workers", "0", "--rank", "genus", "--k", "2", "--rollup", "0.3"]
    args += ["--prior", prior, "--output", out]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    expected = toy_predictor.predict_observations(
        {"x": [photos[0], photos[2]], "y": [photos[1], photos[3]]},
        rank="genus",
        k=2,
        rollup=0.3,
        prior=Prior.read(prior),
    )
    got = read_rows(out, "csv")
    assert [r["observation"] for r in got] == ["x", "x", "y", "y"]
    for g, e in zip(got, expected):
        assert (g["genus"], g["photos"], g["rollup"]) == (e["genus"], e["photos"], e["rollup"])
        assert math.isclose(g["score"], e["score"], abs_tol=1e-5)


def test_reference_photos_of_the_likeliest_species_nearest_first(
    referenced_predictor, toy_model, photos
):
    from biocap_predict import Predictor

    reloaded = Predictor(toy_model, referenced_predictor.index.path, device="cpu")
    assert len(reloaded.references.paths) == 2 * len(set(reloaded.references.rows.tolist()))
    for photo, nearest in zip(photos[:2], reloaded.nearest_references(photos[:2], k=3)):
        species = reloaded.predict([photo], rank="species", k=1)[0]["species"]
        assert [r["species"] for r in nearest] == [species] * len(nearest) and nearest
        assert all(species.replace(" ", "_") in r["path"] for r in nearest)
        (image,) = (f for _, f in reloaded.embed([photo]))
        expected = [
            float(reloaded.references.embeddings[r["id"]] @ image["tax"][0]) for r in nearest
        ]
        assert [r["score"] for r in nearest] == pytest.approx(expected, abs=1e-5)
        assert expected == sorted(expected, reverse=True)
