"""Command-line arguments of the DVC stage scripts: a usage line and exit status 2 on a wrong call."""

from __future__ import annotations

import sys


def stage_args(script: str, *names: str, argv: list[str] | None = None) -> list[str]:
    """The positional arguments ``names`` of ``python stages/<script>.py``; usage and exit 2 otherwise.

    ``argv`` defaults to ``sys.argv[1:]``. Returns the arguments in order (an empty list for none).
    """
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != len(names) or any(a in ("-h", "--help") for a in argv):
        usage = " ".join([f"python stages/{script}.py", *(f"<{n}>" for n in names)])
        print(f"usage: {usage}   (run from the repository root; settings come from params.yaml)", file=sys.stderr)
        raise SystemExit(2)
    return list(argv)
