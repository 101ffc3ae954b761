"""The ``Retry-After`` HTTP header as seconds to wait.

Both network clients of the toolkit honour it (the captions engine talking to
a chat-completions server, the wiki spider talking to MediaWiki), and a server
may send either form RFC 9110 allows: delta-seconds or an HTTP date.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def retry_after_seconds(value: bytes | str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value; ``None`` when absent or unreadable.

    A date in the past, or a negative number, means "retry now" (0.0). HTTP dates are
    always GMT; one written with ``-0000`` parses without a time zone and is read as UTC.
    """
    if not value:
        return None
    text = (value.decode("latin-1") if isinstance(value, bytes) else value).strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
