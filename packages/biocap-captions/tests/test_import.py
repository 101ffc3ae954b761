"""The package installs and imports beside biocap-core."""

import biocap_captions
import biocap_core


def test_imports_with_its_version():
    assert biocap_captions.__version__ == "0.1.0"
    assert biocap_core.__version__
