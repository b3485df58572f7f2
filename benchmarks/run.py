"""Run the jaxconv benchmark suites: the same as ``jaxconv bench`` (see ``--help``).

Examples::

    python benchmarks/run.py --suites mobilenetv2,resnext50 --modes fwd
    python benchmarks/run.py --tiny --out /tmp/bench      # a smoke run, seconds
    python benchmarks/run.py                              # everything: ~10 min on 2 cores

The layer shapes live in ``jaxconv/_src/bench.py`` (``SUITES``), shared with the smoke
test ``tests/test_bench.py``; results go to ``benchmarks/results/``.
"""

from __future__ import annotations

import sys

from jaxconv._src.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
