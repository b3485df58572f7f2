"""The ``jaxconv`` command line: ``jaxconv <command> [options]``.

Each command is a module under ``jaxconv._src.commands`` with ``HELP`` (one line),
``add_arguments(parser)`` and ``main(args) -> int``. Commands load lazily, so a
command whose optional extra is missing does not break the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: command name -> module path
COMMANDS = {
    "check": "jaxconv._src.commands.check",
    "demo": "jaxconv._src.commands.demo",
    "train": "jaxconv._src.commands.train",
    "bench": "jaxconv._src.commands.bench",
}


def _available():
    import importlib.util

    return {n: m for n, m in COMMANDS.items() if importlib.util.find_spec(m) is not None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxconv", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = {}
    for name, path in _available().items():
        mod = importlib.import_module(path)
        modules[name] = mod
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
    args = parser.parse_args(argv)
    return int(modules[args.command].main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
