"""The toy tree of life: a small procedural dataset in the real TreeOfLife-10M layout.

It lets every stage (training, evaluation, captioning, prediction) run on a laptop with no
download. One module per job: :mod:`.species` (the taxonomy and its traits), :mod:`.render`
(images, with each photo's pose, setting and life stage), :mod:`.captions` (each photo's caption,
and caption noise), :mod:`.benchmarks` (evaluation sets in the real layouts), :mod:`.dataset`
(:func:`generate`, which writes it all), :mod:`.download` (:func:`write_download`: the same
species in the TreeOfLife-10M download's layout, for ``biocap-core shards``).
"""

from biocap_core.toy.dataset import ToyConfig, generate
from biocap_core.toy.download import write_download
from biocap_core.toy.render import BACKGROUNDS, TILTS, render
from biocap_core.toy.species import COLOURS, make_species

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "TILTS",
    "ToyConfig",
    "generate",
    "make_species",
    "render",
    "write_download",
]
