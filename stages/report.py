"""DVC stage ``report``: Markdown and LaTeX results tables from the DVC-tracked metrics files.

Usage (from the repository root): ``python stages/report.py``. Reads ``report:`` from params.yaml;
see dfpipe.evaluation.reports.
"""

from dfpipe.core.cli import run_stage, stage_args
from dfpipe.core.config import load_section
from dfpipe.evaluation.reports import ReportConfig
from dfpipe.evaluation.tables import write_tables


def main() -> None:
    stage_args("report")
    cfg = load_section("report", ReportConfig)
    for path in write_tables(cfg):
        print(path.as_posix())


if __name__ == "__main__":
    run_stage(main)
