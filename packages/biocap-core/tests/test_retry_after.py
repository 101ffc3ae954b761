"""Retry-After, as the captions engine and the wiki spider read it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from biocap_core.retry_after import retry_after_seconds


def test_delta_seconds_as_text_or_bytes():
    assert retry_after_seconds("2.5") == 2.5
    assert retry_after_seconds(b" 3\r\n") == 3.0
    assert (
        retry_after_seconds("-4") == 0.0
    )  # nonsense from a server means "now", never a negative sleep


def test_an_http_date_is_the_time_left_until_then():
    later = datetime.now(UTC) + timedelta(seconds=30)
    assert 25.0 < retry_after_seconds(format_datetime(later, usegmt=True)) <= 30.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: retry now


def test_a_date_without_a_zone_is_gmt():
    later = (datetime.now(UTC) + timedelta(seconds=60)).strftime("%a, %d %b %Y %H:%M:%S -0000")
    assert 55.0 < retry_after_seconds(later) <= 60.0


@pytest.mark.parametrize("value", [None, "", b"", "soon", "inf", "nan"])
def test_absent_or_unreadable_values_give_none(value):
    assert retry_after_seconds(value) is None
