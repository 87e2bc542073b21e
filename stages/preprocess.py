"""DVC stage ``preprocess@<source>``: raw images / videos of one source -> face crops.

Usage (from the repository root): ``python stages/preprocess.py <source>``.
Writes ``<split.faces_dir>/<source>/`` (shards, manifest.parquet, rejects.parquet),
``metrics/preprocess/<source>.json`` and the plot ``metrics/preprocess/<source>/face_size.{csv,png}``;
see ``dfpipe.ingest.preprocess``.
"""

from dfpipe.core.cli import run_stage, stage_args
from dfpipe.core.config import RepoPath, build, load_entry, load_section, load_yaml
from dfpipe.ingest.preprocess import PreprocessConfig, run_source
from dfpipe.ingest.sources import SourceConfig


def main() -> None:
    (name,) = stage_args("preprocess", "source")
    cfg = load_section("preprocess", PreprocessConfig)
    source = load_entry("sources", name, SourceConfig)
    # split.faces_dir is the one key naming data/faces (variants read it); no splits import here,
    # so that a change in splits/ does not rerun every preprocess stage
    faces_dir = build(RepoPath, load_yaml().get("split", {}).get("faces_dir"), where="split.faces_dir", root=".")
    m = run_source(name, source, cfg, faces_dir / name, f"metrics/preprocess/{name}.json")
    f, fr = m["files"], m["frames"]
    print(
        f"preprocess {name}: {m['faces']} faces; files {f['offered']} offered = {f['kept']} kept + "
        f"{f['rejected']} rejected {f['rejected_by_reason']}; video frames {fr['sampled']} sampled = "
        f"{fr['kept']} kept + {fr['rejected']} rejected {fr['rejected_by_reason']}"
    )


if __name__ == "__main__":
    run_stage(main)
