"""Print the size of the DVC cache and what fills it: bytes per cached output of dvc.lock, by group.

Usage, from the repository root after `dvc repro` (or `make run`):
    python benchmarks/cache_size.py [--top 15]

Figures: the cache's total (every object file under .dvc/cache, as `du` would count them, older
experiments included), then the objects that the current dvc.lock references, grouped by the
first two path components of each out (data/faces, models/<run>, ...), then the largest outs.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import yaml


def _object(cache: Path, md5: str) -> Path:
    return cache / "files" / "md5" / md5[:2] / md5[2:]


def out_objects(cache: Path, md5: str) -> dict[str, int]:
    """md5 -> size of every cache object an out needs (a directory out: its files)."""
    path = _object(cache, md5)
    if not path.is_file():
        return {}
    if md5.endswith(".dir"):
        entries = json.loads(path.read_text())
        found = {}
        for e in entries:
            obj = _object(cache, e["md5"])
            if obj.is_file():
                found[e["md5"]] = obj.stat().st_size
        return found
    return {md5: path.stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--repo", type=Path, default=Path("."))
    args = parser.parse_args()
    cache = args.repo / ".dvc" / "cache"
    total = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    lock = yaml.safe_load((args.repo / "dvc.lock").read_text())["stages"]
    per_out: dict[str, dict[str, int]] = {}
    for stage in lock.values():
        for out in stage.get("outs", []):
            objs = out_objects(cache, out["md5"])
            if objs:
                per_out[out["path"]] = objs
    referenced: dict[str, int] = {}
    groups: dict[str, dict[str, int]] = defaultdict(dict)
    for path, objs in per_out.items():
        referenced.update(objs)
        groups["/".join(Path(path).parts[:2])].update(objs)
    mb = 1e6
    print(f"DVC cache total: {total / mb:.1f} MB ({cache})")
    print(f"objects referenced by dvc.lock: {sum(referenced.values()) / mb:.1f} MB; "
          f"the rest ({(total - sum(referenced.values())) / mb:.1f} MB) is older runs / experiments")
    print("\nby group (first two path components):")
    for name, objs in sorted(groups.items(), key=lambda kv: -sum(kv[1].values())):
        print(f"  {sum(objs.values()) / mb:10.1f} MB  {name}")
    print(f"\nlargest {args.top} outs:")
    for path, objs in sorted(per_out.items(), key=lambda kv: -sum(kv[1].values()))[: args.top]:
        print(f"  {sum(objs.values()) / mb:10.1f} MB  {path}")


if __name__ == "__main__":
    main()
