"""Throughput of the wikispecies spider against the local MediaWiki stand-in, throttling off.

    uv run python benchmarks/wiki_throughput.py [--species 5000]

The stand-in runs in its own process and serves a synthetic wiki (90% of the
species resolve by title, 5% through a redirect, 5% only through search); the
spider runs here with AutoThrottle and the download delay off and 8 requests
in flight. Prints species/s (and species per CPU-second, which does not
depend on what else the machine runs) and requests per species. Goals:
>= 200 species/s and <= 0.05 content requests per resolved species. The
original scraper makes at least two requests per species (one search, one page).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The MediaWiki stand-in is test code kept out of the wheel; run as a script, it needs only
#: biocap-core.
STANDIN = Path(__file__).resolve().parents[1] / "packages" / "biocap-wiki" / "tests" / "standin.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--species", type=int, default=5000, help="species in the synthetic wiki")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="requests in flight to the stand-in"
    )
    args = parser.parse_args()

    from biocap_wiki.crawl import crawl

    with tempfile.TemporaryDirectory() as tmp:
        species = Path(tmp) / "species.csv"
        server = subprocess.Popen(
            [
                sys.executable,
                str(STANDIN),
                "--synthetic",
                str(args.species),
                "--species-out",
                str(species),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            api = server.stdout.readline().strip()
            started, cpu_started = time.perf_counter(), time.process_time()
            result = crawl(
                species,
                jobdir=Path(tmp) / "job",
                api=api,
                contact="benchmark",
                cache_dir=None,
                settings={
                    "AUTOTHROTTLE_ENABLED": False,
                    "DOWNLOAD_DELAY": 0,
                    "CONCURRENT_REQUESTS_PER_DOMAIN": args.concurrency,
                    "LOG_LEVEL": "WARNING",
                },
            )
            wall = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
        finally:
            server.terminate()
            server.wait()

    stats = result.stats
    elapsed = stats["elapsed_time_seconds"]
    n = result.descriptions.height + result.errors.height
    resolved = result.descriptions.height
    query, search, parse = (
        stats.get(f"wiki/requests/{k}", 0) for k in ("query", "search", "parse")
    )
    print(
        f"species: {n} ({resolved} described, {result.errors.height} errors), finish:"
        f" {result.finish_reason}"
    )
    print(
        f"crawl time: {elapsed:.2f} s (wall incl. Scrapy start-up and parquet reading:"
        f" {wall:.2f} s)"
    )
    print(
        f"throughput: {n / elapsed:.0f} species/s (goal >= 200); "
        f"{n / cpu:.0f} species per CPU-second of the spider process ({cpu:.1f} s CPU)"
    )
    print(
        f"requests: {query} query (content, 50 titles each), {search} search, {parse} parse; "
        f"{(query + search + parse) / n:.3f} per species (the original: >= 2)"
    )
    print(f"content requests per resolved species: {query / resolved:.4f} (goal <= 0.05)")


if __name__ == "__main__":
    main()
