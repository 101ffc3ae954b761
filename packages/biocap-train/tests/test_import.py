"""The package installs and imports beside biocap-core."""

import biocap_core
import biocap_train


def test_imports_with_its_version():
    assert biocap_train.__version__ == "0.1.0"
    assert biocap_core.__version__
