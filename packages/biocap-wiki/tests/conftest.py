"""Makes the test-support modules importable by the tests: ``standin`` (the MediaWiki stand-in
server, also run by ``benchmarks/wiki_throughput.py``) and ``wikitest`` (the stand-in wiki's pages
and the crawl runners).
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from standin import write_species


@pytest.fixture
def species_csv(tmp_path):
    """Write species rows as a CSV in the test's folder."""

    def write(rows: list[dict[str, str]], name: str = "species.csv") -> Path:
        return write_species(rows, tmp_path / name)

    return write
