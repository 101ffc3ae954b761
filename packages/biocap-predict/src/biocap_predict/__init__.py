"""biocap-predict: name the organism in a photo with any BioCAP/BioCLIP-style model.

``TaxaIndex`` and ``Predictor`` are the API; ``TreeOfLifeClassifier``, ``CustomLabelsClassifier``,
``CustomLabelsBinningClassifier``, ``Rank`` and ``get_rank_labels`` mirror pybioclip's names so its
users can switch by changing an import. Names are imported on first use, so
``import biocap_predict`` stays cheap.
"""

from importlib import import_module
from importlib.metadata import version as _version

__version__ = _version("biocap-predict")

_EXPORTS = {
    "TaxaIndex": "biocap_predict.index",
    "Predictor": "biocap_predict.predictor",
    "TreeOfLifeClassifier": "biocap_predict.classifiers",
    "CustomLabelsClassifier": "biocap_predict.classifiers",
    "CustomLabelsBinningClassifier": "biocap_predict.classifiers",
    "Rank": "biocap_predict.classifiers",
    "get_rank_labels": "biocap_predict.classifiers",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
