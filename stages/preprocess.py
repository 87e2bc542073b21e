"""DVC stage ``preprocess@<source>``: raw images / videos of one source -> face crops.

Usage (from the repository root): ``python stages/preprocess.py <source>``.
Writes ``data/faces/<source>/`` (shards, manifest.parquet, rejects.parquet) and
``metrics/preprocess/<source>.json``; see ``dfpipe.ingest.preprocess``.
"""

import sys

from dfpipe.core.config import load_entry, load_section
from dfpipe.ingest.preprocess import PreprocessConfig, run_source
from dfpipe.ingest.sources import SourceConfig


def main() -> None:
    name = sys.argv[1]
    cfg = load_section("preprocess", PreprocessConfig)
    source = load_entry("sources", name, SourceConfig)
    m = run_source(name, source, cfg, f"data/faces/{name}", f"metrics/preprocess/{name}.json")
    print(f"preprocess {name}: {m['faces']} faces from {m['items']} items, {m['rejects']} rejects "
          f"{m['rejects_by_reason']}, {m['seconds']:.1f} s")


if __name__ == "__main__":
    main()
