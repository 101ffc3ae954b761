"""The toolkit's cache folder, where generated data (the toy tree of life) and taxa indexes imported
from published embeddings are kept between runs.

``$BIOCAP_CACHE`` when set, else ``$XDG_CACHE_HOME/biocap``, else ``~/.cache/biocap`` (the XDG
base-directory default). ``biocap-core cache-dir`` prints it, so scripts and docs need not
guess which of the three applies.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache folder (not created here)."""
    if os.environ.get("BIOCAP_CACHE"):
        return Path(os.environ["BIOCAP_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "biocap"
