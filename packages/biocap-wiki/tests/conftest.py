"""Makes ``wikitest`` (the stand-in wiki's pages and the crawl runners) importable by the tests."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from biocap_wiki.standin import write_species


@pytest.fixture
def species_csv(tmp_path):
    """Write species rows as a CSV in the test's folder."""
    def write(rows: list[dict[str, str]], name: str = "species.csv") -> Path:
        return write_species(rows, tmp_path / name)
    return write
