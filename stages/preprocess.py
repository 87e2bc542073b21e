"""DVC stage ``preprocess@<source>``: raw images / videos of one source -> face crops.

Usage (from the repository root):

- ``python stages/preprocess.py <source> [<source> ...]``: writes ``data/faces/<source>/``
  (shards, manifest.parquet, rejects.parquet) and ``metrics/preprocess/<source>.json``; several
  sources that differ only in ``sampling`` share one decoding pass (``run_sources``);
- ``python stages/preprocess.py --part I/N <source>``: part I of N into
  ``data/faces_parts/<source>/part-I-of-N/`` (several machines on one large source);
- ``python stages/preprocess.py --merge N <source>``: merge the N parts into ``data/faces/<source>/``
  (byte-identical to one run). See ``dfpipe.ingest.preprocess`` and docs/full_scale.md.
"""

import sys

from dfpipe.core.config import load_entry, load_section
from dfpipe.ingest.preprocess import PreprocessConfig, merge_parts, run_source, run_sources
from dfpipe.ingest.sources import SourceConfig

USAGE = ("usage: python stages/preprocess.py <source> [<source> ...] | --part I/N <source> | "
         "--merge N <source>")


def _part_dir(name: str, i: int, n: int) -> str:
    return f"data/faces_parts/{name}/part-{i}-of-{n}"


def main() -> None:
    args = sys.argv[1:]
    if not args or (args[0] in ("--part", "--merge") and len(args) != 3):
        raise SystemExit(USAGE)
    cfg = load_section("preprocess", PreprocessConfig)
    if args[0] == "--part":
        i, _, n = args[1].partition("/")
        if not (i.isdigit() and n.isdigit()):
            raise SystemExit(USAGE)
        name, i, n = args[2], int(i), int(n)
        d = _part_dir(name, i, n)
        m = run_source(name, load_entry("sources", name, SourceConfig), cfg, d, f"{d}.json", part=(i, n))
    elif args[0] == "--merge":
        if not args[1].isdigit():
            raise SystemExit(USAGE)
        name, n = args[2], int(args[1])
        load_entry("sources", name, SourceConfig)  # the name must be a source
        dirs = [_part_dir(name, i, n) for i in range(n)]
        m = merge_parts(name, dirs, f"data/faces/{name}", cfg.shard_size, [f"{d}.json" for d in dirs],
                        f"metrics/preprocess/{name}.json")
    else:
        specs = [load_entry("sources", name, SourceConfig) for name in args]
        ms = run_sources(args, specs, cfg, [f"data/faces/{name}" for name in args],
                         [f"metrics/preprocess/{name}.json" for name in args])
        for m in ms:
            print(f"preprocess {m['source']}: {m['faces']} faces from {m['items']} items, {m['rejects']} "
                  f"rejects {m['rejects_by_reason']}, {m['seconds']:.1f} s")
        return
    print(f"preprocess {m['source']}: {m['faces']} faces, {m['rejects']} rejects {m['rejects_by_reason']}")


if __name__ == "__main__":
    main()
