"""Command line of the DVC stage scripts: checked arguments, and one line with exit status 2 on a bad call or config.

Every ``stages/<stage>.py`` runs its ``main`` through :func:`run_stage` and starts ``main`` with
:func:`stage_args`. A wrong call prints a usage line; a stage argument that cannot be a path
component, or any :class:`~dfpipe.core.config.ConfigError`, prints ``ConfigError: <dotted.key>:
<what is wrong>``; both exit 2 with no traceback (set ``DFPIPE_DEBUG=1`` to see it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from dfpipe.core.config import ConfigError, safe_name

#: Environment switch: a non-empty value other than "0" lets a ConfigError raise with its traceback.
DEBUG_ENV = "DFPIPE_DEBUG"

#: The params section whose keys a stage's name argument is (the dvc.yaml ``foreach``), for messages.
ARG_SECTIONS = {
    "preprocess": "sources",
    "preprocess_scale": "sources",
    "variant": "variants",
    "audit": "variants",
    "spectra": "spectra.variants",
    "features": "features.caches",
    "train": "runs",
    "frank": "frank",
    "evaluate": "evaluations",
    "pretrained": "pretrained.weights",
}


def stage_args(script: str, *names: str, argv: list[str] | None = None) -> list[str]:
    """The positional arguments ``names`` of ``python stages/<script>.py``; usage and exit 2 otherwise.

    ``argv`` defaults to ``sys.argv[1:]``. Returns the arguments in order (an empty list for none).
    An argument whose placeholder is one word (``source``, ``run``) names a params entry and
    becomes a folder name, so it must pass :func:`~dfpipe.core.config.safe_name` (a
    :class:`ConfigError` naming ``<section>.<argument>`` otherwise) before the stage reads or
    writes anything; placeholders listing alternatives (``part|merge|pair``) are the script's to check.
    """
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != len(names) or any(a in ("-h", "--help") for a in argv):
        usage = " ".join([f"python stages/{script}.py", *(f"<{n}>" for n in names)])
        print(f"usage: {usage}   (run from the repository root; settings come from params.yaml)", file=sys.stderr)
        raise SystemExit(2)
    for name, arg in zip(names, argv):
        if name.isidentifier():
            safe_name(f"{ARG_SECTIONS.get(script, script)}.{arg}", arg)
    return list(argv)


def run_stage(main: Callable[..., object], *args: object) -> None:
    """Call ``main(*args)``; a :class:`ConfigError` becomes one stderr line and exit status 2.

    The line is ``ConfigError: <message>`` (the message names the dotted key; line breaks inside
    it, e.g. from a YAML parser, are folded). With ``DFPIPE_DEBUG`` set the error propagates with
    its traceback instead. Every other exception keeps Python's traceback: it is a bug or a data
    problem, not a setting to fix.
    """
    try:
        main(*args)
    except ConfigError as exc:
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        print(f"ConfigError: {one_line(str(exc))}", file=sys.stderr)
        raise SystemExit(2) from None


def one_line(text: str) -> str:
    """``text`` on one line: its lines stripped and joined by a space."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())
