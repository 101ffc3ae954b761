"""The shard builder: TreeOfLife-10M's published download, or a catalog of one's own photos, to
webdataset training shards (``biocap-core shards``) and their check (``biocap-core check-shards``).

The real-data twin of :mod:`biocap_core.toy`: samples carry the same members, written by the same
shard writer (:mod:`biocap_core.shards`) and text formats (:func:`~biocap_core.taxonomy.tol_texts`).
One module per job: :mod:`.catalog` (reading catalogs, exclusions, captions), :mod:`.plan` (the
seeded assignment of rows to shards, on disk), :mod:`.images` (the image policy), :mod:`.eol`
(streaming the EOL image sets once), :mod:`.build` (workers, jobs, resume, the outputs) and
:mod:`.check`.
"""

from biocap_core.shard_builder.build import (
    BuildMismatch,
    BuildOptions,
    BuildResult,
    WorkerDied,
    build,
)
from biocap_core.shard_builder.catalog import Inputs
from biocap_core.shard_builder.check import CheckReport, check
from biocap_core.shard_builder.images import BadImage, ImagePolicy

__all__ = [
    "BadImage",
    "BuildMismatch",
    "BuildOptions",
    "BuildResult",
    "CheckReport",
    "ImagePolicy",
    "Inputs",
    "WorkerDied",
    "build",
    "check",
]
