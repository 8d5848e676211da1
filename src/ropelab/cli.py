"""The ``ropelab`` command: thin; each subcommand lives in its own module.

A subcommand module defines ``add_arguments(parser)`` and ``run(args) -> int`` and is
imported only when that subcommand runs (so ``ropelab inspect`` never imports torch).

User errors have one road: a subcommand raises :class:`CommandError` (a bad option value,
an unreadable file, a missing optional dependency, checked before any work starts) and
:func:`main` prints ``ropelab <command>: error: <message>`` and returns 2, as argparse does
for the options it checks itself. A reader that closes the pipe (``ropelab inspect ... |
head``) ends the command quietly.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["CommandError", "SUBCOMMANDS", "main", "need", "output_dir"]


class CommandError(Exception):
    """A user error in a subcommand: printed as ``ropelab <command>: error: ...``, exit 2."""


def need(module: str, *, feature: str) -> ModuleType:
    """Import an optional dependency or raise CommandError naming the extra that brings it."""
    from ._optional import require

    try:
        return require(module, feature=feature)
    except ImportError as err:
        raise CommandError(str(err)) from None

# name -> (module, one-line help, the extra its module needs to import)
SUBCOMMANDS = {
    "inspect": ("ropelab.inspect", "print and plot a RoPE schedule (a preset name or a config.json)", None),
    "lab": ("ropelab.lab.cli", "train tiny models per positional scheme and test them past their training length", "lab"),
    "bench": ("ropelab.bench", "time ropelab's kernels against copy, eager peers and torch.compile", "torch"),
    "figures": ("ropelab.figures", "the papers' figures: RoFormer decay, PI bound, base bound", "plot"),
    "extend": ("ropelab.extend.cli", "every context-extension scheme on a checkpoint past its length; LongRoPE search; write the winner", "lab"),
}


def output_dir(path: str, *, option: str = "--out") -> Path:
    """Create the output folder now, before any work, or raise CommandError saying why not."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".ropelab-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise CommandError(f"cannot write to {option} {path!r}: {err.strerror or err}") from None
    return out


def _parser(argv) -> tuple[argparse.ArgumentParser, object]:
    from . import __version__

    parser = argparse.ArgumentParser(prog="ropelab", description="positional encoding for attention")
    parser.add_argument("--version", action="version", version=f"ropelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    wanted = next((a for a in argv if not a.startswith("-")), None)
    module = None
    for name, (module_name, help_text, extra) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:
            try:
                module = importlib.import_module(module_name)
            except ImportError as err:  # its framework is missing: say which extra brings it
                if extra is None:
                    raise
                missing = err.name or str(err)
                parser.exit(
                    2,
                    f"ropelab {name}: error: needs the optional dependency {missing!r}, which is "
                    f"not installed; install it with: pip install 'ropelab[{extra}]'\n",
                )
            module.add_arguments(p)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, module = _parser(argv)
    args = parser.parse_args(argv)
    try:
        return int(module.run(args) or 0)
    except CommandError as err:
        print(f"ropelab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away: point stdout at /dev/null so the interpreter's final flush
        # does not fail again, and stop without a traceback (Python's documented recipe)
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main())
