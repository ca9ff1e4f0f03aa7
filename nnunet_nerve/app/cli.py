"""`nnunet-nerve <verb>`: parses arguments and dispatches; no logic lives here.

Each module in ``nnunet_nerve.app.commands`` registers its verbs with ``add_parsers`` and
points them at the verb's function in ``nnunet_nerve.api`` (which holds the defaults). Bad input
raises ``NerveError``; it becomes one ``error:`` line on stderr and exit status 2, as does an
OSError that names its path (permission denied, a folder that is a file:
``io.atomic.file_system_error``).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from nnunet_nerve import __version__
from nnunet_nerve.errors import NerveError

#: The modules under nnunet_nerve.app.commands that register verbs, in --help order.
COMMAND_MODULES = (
    "environment",
    "registry",
    "evaluate",
    "biomarkers",
    "segment",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet-nerve",
        description="FC-DenseNet peripheral-nerve segmentation (Balsiger et al. 2018) as an nnU-Net v2 plug-in.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"nnunet_nerve.app.commands.{name}").add_parsers(sub)
    return parser


def main(argv: "list[str] | None" = None) -> int:
    """Run one verb; Ctrl-C, SIGTERM and SIGHUP remove what was half-written and exit
    with 128 + the signal's number, as does a closed stdout (SIGPIPE)."""
    from nnunet_nerve.io.atomic import Terminated, file_system_error, termination_signals_raise

    args = build_parser().parse_args(argv)
    try:
        with termination_signals_raise():
            try:
                return int(args.func(args) or 0)
            except OSError as e:  # a read-only or unreadable folder, a folder that is a file
                raise (file_system_error(e) or e) from None
    except NerveError as e:
        for problem in e.problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Terminated as e:
        print(f"error: interrupted ({e})", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _stdout_closed()


def _stdout_closed() -> int:
    """The reader of our output went away (``nnunet-nerve ... | head``): stop quietly, as a
    program that SIGPIPE ends does (what was half-written is already removed), with its exit
    status 128 + SIGPIPE; stdout goes to /dev/null so that Python's flush at exit cannot fail
    again."""
    import os
    import signal

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
