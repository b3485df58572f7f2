"""Train a small CNN of jaxconv layers on scikit-learn's 8x8 digits.

    python examples/train_digits.py --implementation taps --epochs 20 --out /tmp/digits

The same as ``jaxconv train`` (see ``jaxconv train --help``); the code is in
``jaxconv/_src/train_digits.py``. Needs ``pip install "jaxconv[train]"`` (scikit-learn,
orbax-checkpoint, matplotlib).
"""

import sys

from jaxconv._src.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
