"""Checks that the DVC remote ``make pull`` would read is reachable, before the pull starts.

``make pull`` runs it as a plain script (``python src/dfpipe/pipeline/pullcheck.py --dvc <dvc>``):
it uses the standard library only and asks DVC itself (the ``dvc`` it is given, e.g.
``.venv-pull/bin/dvc``) for the default remote and its URL, merged over ``.dvc/config`` and
``.dvc/config.local`` with relative paths resolved. A clone in another folder resolves the
committed relative URL (``../../dfpipe-dvc-remote``) next to itself, where nothing is: without this
check ``dvc pull`` then fails with one "missing cache files" line per object, never naming the URL.

Reachable means: a local folder exists; an SSH / S3 / HTTP(S) host accepts a TCP connection on its
port. Credentials are not tried here: a wrong key or secret is left to DVC's own one-line error.
Otherwise it prints one message naming the remote, the URL tried and the commands that set one,
and exits 1.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from urllib.parse import urlsplit

#: TCP port of a scheme when the URL names none
DEFAULT_PORTS = {"ssh": 22, "s3": 443, "https": 443, "http": 80, "webdavs": 443, "webdav": 80}
TIMEOUT_S = 10.0


def dvc_out(dvc: str, *args: str) -> str:
    """stdout of ``dvc <args>`` (stripped); empty when DVC answers with an error."""
    proc = subprocess.run([dvc, *args], capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def endpoint(dvc: str, name: str, url: str) -> tuple[str, int] | None:
    """(host, port) a network remote is reached at; None for a local folder or an unknown scheme."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "s3":  # the bucket is reached through the endpoint (AWS unless endpointurl is set)
        custom = dvc_out(dvc, "config", f"remote.{name}.endpointurl")
        if not custom:
            return "s3.amazonaws.com", 443
        parts, scheme = urlsplit(custom), urlsplit(custom).scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    port = parts.port or int(dvc_out(dvc, "config", f"remote.{name}.port") or DEFAULT_PORTS[scheme])
    return parts.hostname, port


def problem(dvc: str, name: str, url: str) -> str | None:
    """Why ``url`` cannot be reached (None when it can, or when this check cannot tell)."""
    parts = urlsplit(url)
    if parts.scheme in ("", "file") or (len(parts.scheme) == 1 and os.name == "nt"):
        path = parts.path if parts.scheme == "file" else url
        return None if os.path.isdir(path) else "no such folder"
    where = endpoint(dvc, name, url)
    if where is None:
        return None
    try:
        socket.create_connection(where, timeout=TIMEOUT_S).close()
    except OSError as exc:
        return f"no connection to {where[0]}:{where[1]} ({exc.strerror or type(exc).__name__})"
    return None


def message(dvc: str, name: str, url: str, why: str) -> str:
    return (
        f"make pull: DVC remote '{name}' is not reachable at {url} ({why}).\n"
        f"  Point this clone at the remote you were given (kept out of git in .dvc/config.local):\n"
        f"    {dvc} remote modify --local {name} url <url>\n"
        f"  or add one:  {dvc} remote add --local -d <name> <url>   (docs/sharing.md)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dvc", default="dvc", help="the dvc executable make pull uses")
    args = parser.parse_args(argv)
    name = dvc_out(args.dvc, "remote", "default")
    if not name:
        print(
            "make pull: no default DVC remote is configured.\n"
            f"  Add the remote you were given:  {args.dvc} remote add --local -d <name> <url>   (docs/sharing.md)",
            file=sys.stderr,
        )
        return 1
    url = dvc_out(args.dvc, "config", f"remote.{name}.url")
    why = problem(args.dvc, name, url) if url else "no url set"
    if why:
        print(message(args.dvc, name, url or "(none)", why), file=sys.stderr)
        return 1
    print(f"make pull: DVC remote '{name}' at {url} is reachable")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
