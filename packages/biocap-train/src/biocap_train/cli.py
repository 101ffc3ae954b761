"""``biocap-train`` entry point (the training loop lands with the training issue)."""

import sys


def main() -> None:
    sys.exit("biocap-train: the training loop is not implemented yet; see the training issue")
