"""Pause with SIGINT and resume with the same JOBDIR: each species exactly once, no page fetched
twice."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import threading
from collections import Counter

from wikitest import PROJECT, check_outcomes, make_wiki, read_jsonl, run_scrapy, scrapy_command


def test_interrupted_crawl_resumes_with_each_species_exactly_once(tmp_path, species_csv):
    wiki, rows = make_wiki(200)  # 209 binomials: five start batches
    title_queries = itertools.count()
    held: list[dict] = []

    def third_batch(params: dict) -> bool:
        if "titles" in params and next(title_queries) == 2:
            held.append(params)
            return True
        return False

    # hold the third batch until the spider has been told to stop, so the interruption is mid-crawl:
    # with one request at a time per host, nothing else completes while it is held
    arrived, release = wiki.hold(third_batch)
    feed, job = tmp_path / "feed.jsonl", tmp_path / "job"
    cmd = scrapy_command(
        species_csv(rows),
        "",
        feed,
        overwrite=False,  # -o appends across the two runs
        settings={"JOBDIR": str(job), "HTTPCACHE_DIR": str(tmp_path / "cache")},
    )
    with wiki:
        cmd[cmd.index("api=")] = f"api={wiki.api_url}"
        first = subprocess.Popen(
            cmd,
            cwd=PROJECT,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        stopping = threading.Event()
        log: list[str] = []

        def read_log() -> None:
            for line in first.stderr:
                log.append(line)
                if "shutting down gracefully" in line:
                    stopping.set()

        reader = threading.Thread(target=read_log, daemon=True)
        reader.start()
        assert arrived.wait(60), "".join(log[-30:])
        first.send_signal(signal.SIGINT)
        assert stopping.wait(60), "".join(log[-30:])
        release.set()  # the request in flight completes during the graceful shutdown
        assert first.wait(60) == 0
        reader.join(10)
        assert "Spider closed (shutdown)" in "".join(log)
        # the pause stops the requests at once: the one in flight was the last
        last = max(i for i, e in enumerate(wiki.log) if e.params is held[0])
        assert not wiki.log[last + 1 :], f"{len(wiki.log) - last - 1} requests sent after the pause"
        assert "paused with" in "".join(log) and "'wiki/paused': True" in "".join(log)
        done_first = len(read_jsonl(feed))
        assert 0 < done_first < len(rows)
        assert (job / "spider.state").exists()
        sent_first = len(wiki.log)

        second = run_scrapy(cmd)
        assert "Spider closed (finished)" in second.stderr
        assert "binomials to describe" in second.stderr
        assert any("titles" in e.params for e in wiki.log[sent_first:]), (
            "the rest was fetched on resume"
        )

    check_outcomes(read_jsonl(feed), rows)
    fetched = Counter(
        t for e in wiki.log if "titles" in e.params for t in e.params["titles"].split("|")
    )
    assert fetched and max(fetched.values()) == 1, [t for t, n in fetched.items() if n > 1]
