"""DVC stage ``preprocess@<source>``: raw images / videos of one source -> face crops.

Usage (from the repository root): ``python stages/preprocess.py <source>``.
Writes ``data/faces/<source>/`` (shards, manifest.parquet, rejects.parquet),
``metrics/preprocess/<source>.json`` and the plot ``metrics/preprocess/<source>/face_size.{csv,png}``;
see ``dfpipe.ingest.preprocess``.
"""

import sys
from pathlib import Path

from dfpipe.core.config import ConfigError, load_entry, load_section
from dfpipe.core.io import resolve_inside
from dfpipe.ingest.preprocess import PreprocessConfig, run_source
from dfpipe.ingest.sources import SourceConfig


def main() -> None:
    name = sys.argv[1]
    cfg = load_section("preprocess", PreprocessConfig)
    source = load_entry("sources", name, SourceConfig)
    try:  # `..` or a symlinked root leaving the repository: DVC would not track what is read
        resolve_inside(Path.cwd(), source.path)
    except ValueError as exc:
        raise ConfigError(f"sources.{name}.path: {exc}") from exc
    m = run_source(name, source, cfg, f"data/faces/{name}", f"metrics/preprocess/{name}.json")
    f, fr = m["files"], m["frames"]
    print(f"preprocess {name}: {m['faces']} faces; files {f['offered']} offered = {f['kept']} kept + "
          f"{f['rejected']} rejected {f['rejected_by_reason']}; video frames {fr['sampled']} sampled = "
          f"{fr['kept']} kept + {fr['rejected']} rejected {fr['rejected_by_reason']}")


if __name__ == "__main__":
    main()
