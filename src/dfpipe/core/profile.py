"""Apply a parameter profile (``params.<name>.yaml``) to ``params.yaml``: one switch to full scale.

``python -m dfpipe.core.profile full`` deep-merges ``params.full.yaml`` into ``params.yaml``
(mappings key by key, anything else replaced) and rewrites ``params.yaml`` with DVC's own
round-trip writer (the one ``dvc exp run -S`` uses), so comments and key order stay and a later
``-S`` changes one line. DVC then sees ordinary param changes:
``dvc exp show`` lists exactly the keys the profile changed, and ``dvc repro`` / ``dvc exp run``
rebuilds what depends on them. A profile key that ``params.yaml`` lacks is an error (a typo must
not add a key that no stage reads), except inside a ``runs.<name>`` entry, which may override any
``run_defaults`` key (the merged run is validated strictly by its config class), and a whole new
entry of :data:`ENTRY_SECTIONS`. ``--check``
prints the keys that would change and writes nothing.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dfpipe.core.config import PARAMS_FILE, ConfigError, load_yaml

#: Sections of named entries a profile may extend with new ones: the full scale's extra runs, poisoned
#: variants, backdoor experiments and their table rows (more poisoning rates than the demo can afford).
ENTRY_SECTIONS = ("runs", "poison", "backdoor.experiments", "report.backdoor.rows")


def merge_into(target: Any, profile: Mapping[str, Any], where: str = "") -> list[str]:
    """Deep-merge ``profile`` into the ruamel mapping ``target`` in place; return the dotted keys set."""
    changed = []
    for key, value in profile.items():
        dotted = f"{where}.{key}" if where else str(key)
        # runs.<name> entries may gain keys of run_defaults (RunConfig validates them strictly), and
        # ENTRY_SECTIONS may gain whole entries (each validated by its stage's config class)
        new_entry = where in ENTRY_SECTIONS
        if key not in target and not new_entry and not (dotted.startswith("runs.") and dotted.count(".") >= 2):
            raise ConfigError(f"profile key {dotted}: not in {PARAMS_FILE} (profiles only change existing keys)")
        if isinstance(value, Mapping) and key in target and isinstance(target[key], Mapping):
            changed += merge_into(target[key], value, dotted)
        else:
            if key not in target or target[key] != value:
                changed.append(dotted)
            target[key] = value
    return changed


def apply_profile(name: str, params: Path = Path(PARAMS_FILE), write: bool = True) -> tuple[str, list[str]]:
    """Merge ``params.<name>.yaml`` (beside ``params``) into ``params``; return (new text, changed keys)."""
    # DVC's own round-trip reader and writer (what `dvc exp run -S` rewrites params.yaml with):
    # comments and key order stay, and the written file is in the layout a later `-S` keeps, so
    # after a profile one `-S` still changes one line
    from dvc.utils.serialize._yaml import _dump, parse_yaml_for_update

    profile_path = params.with_name(f"params.{name}.yaml")
    profile = load_yaml(profile_path)
    data = parse_yaml_for_update(params.read_text(encoding="utf-8"), str(params))
    changed = merge_into(data, profile)
    buf = io.StringIO()
    _dump(data, buf)
    text = buf.getvalue()
    if write:
        params.write_text(text, encoding="utf-8")
    return text, changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dfpipe.core.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="profile name: params.<name>.yaml (e.g. full)")
    parser.add_argument("--params", type=Path, default=Path(PARAMS_FILE), help="parameters file to update")
    parser.add_argument("--check", action="store_true", help="print the keys that would change; write nothing")
    args = parser.parse_args(argv)
    try:
        _, changed = apply_profile(args.name, args.params, write=not args.check)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    verb = "would change" if args.check else "changed"
    print(f"profile {args.name}: {verb} {len(changed)} key(s) in {args.params}")
    for key in changed:
        print(f"  {key}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
