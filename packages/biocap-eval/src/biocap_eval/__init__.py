"""biocap-eval: zero-shot classification, INQUIRE-Rerank and text-image retrieval for CLIP-style
models.

``biocap-eval run|list|report`` is the command line; :func:`biocap_eval.api.evaluate` the Python
API.
"""

from importlib.metadata import version as _version

__version__ = _version("biocap-eval")
