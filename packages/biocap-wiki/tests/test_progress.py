"""The progress line of `biocap-wiki crawl`: rewritten in place on a terminal, one line each time in
a log."""

import io

from biocap_wiki.extensions import Progress


class Stats:
    def get_stats(self):
        return {
            "wiki/rows": 10,
            "wiki/rows_before": 2,
            "wiki/descriptions": 3,
            "wiki/errors/not found": 1,
            "wiki/requests/query": 4,
            "wiki/requests/search": 1,
        }


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_counts_earlier_runs_and_rewrites_one_line_on_a_terminal():
    line = "6/10 species: 3 described, 1 errors; 5 requests"
    terminal, log = Terminal(), io.StringIO()
    for stream in (terminal, log):
        progress = Progress(Stats(), 5.0, stream)
        progress.report()
        progress.report(last=True)
    assert (
        terminal.getvalue() == f"\x1b[K{line}\r\x1b[K{line}\n"
    )  # the cursor waits at the line's start
    assert log.getvalue() == f"{line}\n{line}\n"
