"""`biocap-wiki crawl / tables / merge` as a user runs them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import polars as pl
from typer.testing import CliRunner
from wikitest import CONTACT, EXPECTED, FAST, PLANT, make_wiki

from biocap_core import schemas
from biocap_wiki.cli import app

# the CLI's own log level (quiet unless -v) stays
FAST_SETS = [
    arg
    for name, value in FAST.items()
    if name != "LOG_LEVEL"
    for arg in ("--set", f"{name}={value}")
]


def biocap_wiki(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "biocap_wiki", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "BIOCAP_WIKI_CONTACT": ""},
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_crawl_writes_schema_tables_resumes_idempotently_and_merges_onto_a_catalog(
    tmp_path, species_csv
):
    wiki, rows = make_wiki(0)
    species = species_csv(rows)
    out = tmp_path / "descriptions.parquet"
    crawl = [
        "crawl",
        str(species),
        "--out",
        str(out),
        "--contact",
        CONTACT,
        "--cache-dir",
        str(tmp_path / "cache"),
        *FAST_SETS,
    ]
    with wiki:
        first = biocap_wiki(*crawl, "--api", wiki.api_url)
        assert first.returncode == 0, first.stderr[-3000:]
        sent = len(wiki.log)
        again = biocap_wiki(
            *crawl, "--api", wiki.api_url, "-v"
        )  # the finished job is kept: nothing to do
        assert again.returncode == 0 and len(wiki.log) == sent
    # quiet by default: a progress line, not Scrapy's settings and stats; -v shows Scrapy's log
    assert f"{len(EXPECTED)}/{len(EXPECTED)} species: " in first.stderr
    assert "Overridden settings" not in first.stderr and "Dumping Scrapy stats" not in first.stderr
    assert len(first.stderr.splitlines()) < 10, first.stderr
    assert "Spider closed (finished)" in again.stderr

    descriptions = schemas.WIKI_DESCRIPTIONS.read(out)
    errors = schemas.WIKI_ERRORS.read(tmp_path / "descriptions_errors.parquet")
    described = {k for k, v in EXPECTED.items() if v[0] == "description"}
    assert set(descriptions.select(schemas.SPECIES_LIST.column_names).rows()) == described
    assert dict(errors.select("binomial", "reason").rows()) == {
        k[0]: v[1] for k, v in EXPECTED.items() if v[0] == "error" and k[0] != "Abronia umbellata"
    } | {"Abronia umbellata": "taxonomy mismatch"}
    assert (
        f"{len(described)} descriptions" in first.stdout and "taxonomy mismatch: 3" in first.stdout
    )

    # the plant and the lizard Abronia umbellata, two images of one taxon, and an unknown taxon
    plant = (*PLANT, "Caryophyllales", "Nyctaginaceae", "Abronia", "umbellata")
    lizard = ("Animalia", "Chordata", "Reptilia", "Squamata", "Anguidae", "Abronia", "umbellata")
    aotus_plant = (*PLANT, "Fabales", "Fabaceae", "Aotus", "gracilis")
    catalog = pl.DataFrame(
        [
            ("u1", *plant),
            ("u2", *lizard),
            ("u3", *aotus_plant),
            ("u4", *aotus_plant),
            ("u5", *lizard[:-1], "x"),
        ],
        schema=["uuid", "kingdom", "phylum", "class", "order", "family", "genus", "species"],
        orient="row",
    )
    catalog.write_parquet(tmp_path / "catalog.parquet")
    merged_path = tmp_path / "uuid_descriptions.parquet"
    merged = biocap_wiki(
        "merge", str(tmp_path / "catalog.parquet"), str(out), "--out", str(merged_path)
    )
    assert merged.returncode == 0, merged.stderr
    assert "3 of 5 images have a description" in merged.stdout
    by_uuid = dict(schemas.UUID_DESCRIPTIONS.read(merged_path).select("uuid", "description").rows())
    assert (
        "prostrate perennial" in by_uuid["u1"] and by_uuid["u2"] is None and by_uuid["u5"] is None
    )
    assert "yellow pea flowers" in by_uuid["u3"] and by_uuid["u3"] == by_uuid["u4"]


def test_wikimedia_is_refused_without_contact_and_bad_lists_are_named(tmp_path, species_csv):
    runner = CliRunner()
    species = species_csv(
        [
            dict(
                zip(
                    (
                        "binomial",
                        "kingdom",
                        "phylum",
                        "class",
                        "order",
                        "family",
                        "genus",
                        "species",
                    ),
                    ("Puma concolor", "Animalia", "", "", "", "", "Puma", "concolor"),
                )
            )
        ]
    )
    refused = runner.invoke(
        app,
        ["crawl", str(species), "--out", str(tmp_path / "d.parquet")],
        env={"BIOCAP_WIKI_CONTACT": ""},
    )
    assert (
        refused.exit_code == 1
        and "contact" in refused.output
        and "en.wikipedia.org" in refused.output
    )

    bad = tmp_path / "bad.csv"
    bad.write_text("name,kingdom\nPuma concolor,Animalia\n")
    failed = runner.invoke(
        app, ["crawl", str(bad), "--out", str(tmp_path / "d.parquet"), "--contact", "x"]
    )
    assert failed.exit_code == 1 and "bad.csv" in failed.output and "binomial" in failed.output


def test_tables_converts_a_scrapy_feed(tmp_path):
    feed = tmp_path / "feed.jsonl"
    feed.write_text(
        '{"binomial": "A b", "kingdom": "K", "phylum": "P", "class": "C", "order": "O", '
        '"family": "F", "genus": "A", "species": "b", "reason": "not found", "detail": "none"}\n'
    )
    result = CliRunner().invoke(app, ["tables", str(feed), "--out", str(tmp_path / "d.parquet")])
    assert result.exit_code == 0, result.output
    assert schemas.WIKI_DESCRIPTIONS.read(tmp_path / "d.parquet").height == 0
    assert schemas.WIKI_ERRORS.read(tmp_path / "d_errors.parquet")["reason"].to_list() == [
        "not found"
    ]


def test_an_out_path_that_cannot_be_written_is_one_line_naming_it(tmp_path, species_csv):
    species = species_csv(
        [
            dict(
                zip(
                    (
                        "binomial",
                        "kingdom",
                        "phylum",
                        "class",
                        "order",
                        "family",
                        "genus",
                        "species",
                    ),
                    ("Puma concolor", "Animalia", "", "", "", "", "Puma", "concolor"),
                )
            )
        ]
    )
    feed = tmp_path / "feed.jsonl"
    feed.write_text("")
    (tmp_path / "catalog.csv").write_text("uuid,kingdom,phylum,class,order,family,genus,species\n")
    regular = tmp_path / "notes.txt"
    regular.write_text("a file, not a folder")
    runner = CliRunner()
    for bad in (
        regular / "d.parquet",
        regular / "sub" / "d.parquet",
        Path("/proc/biocap/d.parquet"),
    ):
        for args in (
            ["crawl", str(species), "--contact", "x", "--api", "http://127.0.0.1:9/w/api.php"],
            ["tables", str(feed)],
            ["merge", str(tmp_path / "catalog.csv"), str(species)],
        ):
            result = runner.invoke(app, [*args, "--out", str(bad)])
            assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (
                args,
                result.output,
            )
            lines = result.output.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: cannot write here"), (
                args,
                result.output,
            )
    assert regular.read_text() == "a file, not a folder"


def test_an_unreachable_api_fails_fast_and_the_same_command_crawls_once_it_is_up(
    tmp_path, species_csv
):
    wiki, rows = make_wiki(0)
    port = free_port()
    out = tmp_path / "descriptions.parquet"
    crawl = [
        "crawl",
        str(species_csv(rows)),
        "--out",
        str(out),
        "--contact",
        CONTACT,
        "--no-cache",
        "--api",
        f"http://127.0.0.1:{port}/w/api.php",
        *FAST_SETS,
        "--set",
        "RETRY_BACKOFF_BASE=30",
    ]
    down = biocap_wiki(
        *crawl, timeout=25
    )  # not retried: five backoffs from 30 s would take minutes
    assert down.returncode == 1, down.stderr[-3000:]
    assert "Connection refused" in down.stderr and "could not be reached" in down.stderr
    assert not out.exists()
    with wiki.serve(port=port):
        up = biocap_wiki(*crawl)
    assert up.returncode == 0, up.stderr[-3000:]
    described = [k for k, v in EXPECTED.items() if v[0] == "description"]
    assert schemas.WIKI_DESCRIPTIONS.read(out).height == len(described)


def test_request_failures_exit_non_zero_and_the_same_command_retries_only_them(
    tmp_path, species_csv
):
    wiki, rows = make_wiki(0)
    out = tmp_path / "descriptions.parquet"
    # every retry still happens, a millisecond apart: waiting for FAST's 0.05 s backoff (1.55 s per
    # request, one request at a time) was most of this test's time
    crawl = [
        "crawl",
        str(species_csv(rows)),
        "--out",
        str(out),
        "--contact",
        CONTACT,
        "--no-cache",
        *FAST_SETS,
        "--set",
        "RETRY_BACKOFF_BASE=0.001",
    ]
    wiki.outage = lambda params: params.get("list") == "search"  # 503 for every search, retries too
    with wiki:
        first = biocap_wiki(*crawl, "--api", wiki.api_url)
        assert first.returncode == 1, first.stderr[-3000:]
        assert "request failures; run the same command again to retry them" in first.stderr
        errors = schemas.WIKI_ERRORS.read(tmp_path / "descriptions_errors.parquet")
        failed_rows = errors.filter(pl.col("reason") == "request failed")
        assert set(failed_rows["detail"]) == {"HTTP 503 Service Unavailable after every retry"}
        failed = set(failed_rows["binomial"])
        assert {"Quercus alba", "Aotus gracilis", "Nonexistus imaginarius"} <= failed
        wiki.outage, sent = None, len(wiki.log)
        second = biocap_wiki(*crawl, "--api", wiki.api_url)
        assert second.returncode == 0, second.stderr[-3000:]
    retried = wiki.log[sent:]
    assert {e.params["srsearch"] for e in retried if e.params.get("list") == "search"} == failed
    assert not any("Puma concolor" in e.params.get("titles", "") for e in retried)
    descriptions = schemas.WIKI_DESCRIPTIONS.read(out)
    errors = schemas.WIKI_ERRORS.read(tmp_path / "descriptions_errors.parquet")
    outcomes = {
        **{
            row: ("description",)
            for row in descriptions.select(schemas.SPECIES_LIST.column_names).rows()
        },
        **{
            row[:-1]: ("error", row[-1])
            for row in errors.select(*schemas.SPECIES_LIST.column_names, "reason").rows()
        },
    }
    assert outcomes == {k: v[:1] if v[0] == "description" else v for k, v in EXPECTED.items()}


def test_crawl_from_python_gives_back_the_callers_ctrl_c_handler(tmp_path, species_csv):
    """Scrapy takes over SIGINT/SIGTERM while it crawls; after biocap_wiki.crawl() returns, Ctrl-C
    acts as it did before the call.
    (In a child process: Twisted's reactor runs once per process.)"""
    wiki, rows = make_wiki(0)
    species = species_csv(rows[:3])
    script = (
        "import json, signal, sys\nfrom biocap_wiki.crawl import crawl\nbefore ="
        " [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]\nresult ="
        f" crawl(sys.argv[1], sys.argv[2], api=sys.argv[3], contact={CONTACT!r},"
        f" settings={FAST!r})\nafter = [signal.getsignal(s) for s in (signal.SIGINT,"
        " signal.SIGTERM)]\nprint(json.dumps([result.finished, before == after,"
        " repr(after[0])]))\n"
    )
    with wiki:
        run = subprocess.run(
            [sys.executable, "-c", script, str(species), str(tmp_path / "d.parquet"), wiki.api_url],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 0, run.stderr[-3000:]
    finished, same, sigint = json.loads(run.stdout.strip().splitlines()[-1])
    assert finished and same, sigint
