"""The ``ropelab`` command: thin; each subcommand lives in its own module.

A subcommand module defines ``add_arguments(parser)`` and ``run(args) -> int`` and is
imported only when that subcommand runs (so ``ropelab inspect`` never imports torch).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS = {
    "inspect": ("ropelab.inspect", "print and plot a RoPE schedule (a preset name or a config.json)"),
    "lab": ("ropelab.lab.cli", "train tiny models per positional scheme and test them past their training length"),
    "bench": ("ropelab.bench", "time ropelab's kernels against copy, eager peers and torch.compile"),
    "figures": ("ropelab.figures", "the papers' figures: RoFormer decay, PI bound, base bound"),
    "extend": ("ropelab.extend.cli", "every context-extension scheme on a checkpoint past its length; LongRoPE search; write the winner"),
}


def _parser(argv) -> tuple[argparse.ArgumentParser, object]:
    from . import __version__

    parser = argparse.ArgumentParser(prog="ropelab", description="positional encoding for attention")
    parser.add_argument("--version", action="version", version=f"ropelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    wanted = next((a for a in argv if not a.startswith("-")), None)
    module = None
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, module = _parser(argv)
    args = parser.parse_args(argv)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
