"""Preprocessing beyond one stage per source: parts of one large source, their merge, decode-once pairs.

Usage (from the repository root): ``python stages/preprocess_scale.py <mode> <source> <arg>``

- ``part <source> I/N``: part I of N of the source's sorted listing into
  ``data/faces_parts/<source>/part-I-of-N/`` (+ ``part-I-of-N.json`` metrics); parts can run on
  different machines (each may also use ``runtime.preprocess.executor: ray``);
- ``merge <source> N``: the N parts into ``<split.faces_dir>/<source>/`` and
  ``metrics/preprocess/<source>.json``, byte-identical to ``stages/preprocess.py <source>``;
- ``pair <source> <other>``: two sources differing only in ``sampling`` (FF++ every 20th and K per
  video) in one decoding pass, each output byte-identical to its own preprocess stage.

See ``dfpipe.ingest.preprocess`` (``run_source(part=...)``, ``run_sources``),
``dfpipe.ingest.parts`` (``merge_parts``) and docs/full_scale.md section 4 for the dvc.yaml wiring.
"""

import sys

from dfpipe.core.cli import run_stage, stage_args
from dfpipe.core.config import RepoPath, build, load_entry, load_section, load_yaml
from dfpipe.ingest.parts import merge_parts
from dfpipe.ingest.preprocess import PreprocessConfig, run_source, run_sources
from dfpipe.ingest.sources import SourceConfig

PARTS_DIR = "data/faces_parts"


def _bad(message: str) -> None:
    print(f"preprocess_scale: {message}", file=sys.stderr)
    raise SystemExit(2)


def main() -> None:
    mode, name, arg = stage_args("preprocess_scale", "part|merge|pair", "source", "I/N|N|source")
    cfg = load_section("preprocess", PreprocessConfig)
    spec = load_entry("sources", name, SourceConfig)
    faces_dir = build(RepoPath, load_yaml().get("split", {}).get("faces_dir"), where="split.faces_dir", root=".")
    if mode == "part":
        i, _, n = arg.partition("/")
        if not (i.isdigit() and n.isdigit() and int(i) < int(n)):
            _bad(f"part must be I/N with 0 <= I < N, got {arg!r}")
        d = f"{PARTS_DIR}/{name}/part-{i}-of-{n}"
        m = run_source(name, spec, cfg, d, f"{d}.json", part=(int(i), int(n)))
    elif mode == "merge":
        if not arg.isdigit() or int(arg) < 1:
            _bad(f"merge needs the number of parts, got {arg!r}")
        dirs = [f"{PARTS_DIR}/{name}/part-{i}-of-{arg}" for i in range(int(arg))]
        m = merge_parts(
            name, dirs, faces_dir / name, cfg.shard_size, [f"{d}.json" for d in dirs], f"metrics/preprocess/{name}.json"
        )
    elif mode == "pair":
        other = load_entry("sources", arg, SourceConfig)
        for m in run_sources(
            [name, arg],
            [spec, other],
            cfg,
            [faces_dir / name, faces_dir / arg],
            [f"metrics/preprocess/{name}.json", f"metrics/preprocess/{arg}.json"],
        ):
            print(
                f"preprocess {m['source']}: {m['faces']} faces from {m['items']} items, "
                f"{m['files']['rejected']} files rejected"
            )
        return
    else:
        _bad(f"mode must be part, merge or pair, got {mode!r}")
    f, fr = m["files"], m["frames"]
    print(
        f"preprocess {name} ({mode} {arg}): {m['faces']} faces; files {f['offered']} offered = {f['kept']} kept + "
        f"{f['rejected']} rejected {f['rejected_by_reason']}; video frames {fr['sampled']} sampled"
    )


if __name__ == "__main__":
    run_stage(main)
