"""The results dashboard (dfpipe.pipeline.dashboard): its plan on this repository's params and
metrics, and the page drawn by headless Chromium with the network blocked.

The browser test builds the page from the committed metrics/ with real DVC, opens it in Chromium
(no network: a dead proxy and no name resolution), and counts the panels that drew: a Vega panel
drew when its SVG holds a data mark with geometry, a PNG panel when the image decoded (the page
records ``naturalWidth``). Its control is the same page with DVC's CDN scripts instead of the local
ones and one image pointing nowhere: there no Vega panel may draw and that image must count empty.
``DFPIPE_SCREENSHOT_DIR=<dir>`` also copies the screenshots there (docs/img/ holds two).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from dfpipe.pipeline import dashboard as D

REPO = Path(__file__).resolve().parents[2]
DVC = str(Path(sys.executable).parent / "dvc")
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
#: Headless, no GPU, no background traffic; the proxy (discard port) and resolver rules cut the network.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--proxy-server=127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--virtual-time-budget=30000",
)


def _params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_plan_one_section_per_table_each_figure_once():
    params = _params()
    sections, labels = D.plan(params, REPO)
    ids = [s.id for s in sections]
    assert len(ids) == len(set(ids))
    assert list(params["report"]["tables"]) == ids[: len(params["report"]["tables"])]
    plots = [p for s in sections for p in s.plots]
    assert plots and len(plots) == len(set(plots)), "a figure shown twice"
    # no per-evaluation Vega duplicate of a PNG: evaluations are PNGs only, overlays are Vega
    assert not [p for p in plots if p.endswith((".csv", ".tsv")) or p.endswith("/figures")]
    for name, table in params["report"]["tables"].items():
        assert set(labels[f"{name}_roc"].values()) == set(table["rows"]), name
        assert {f"{name}_roc", f"{name}_val_f1"} <= set(next(s for s in sections if s.id == name).plots)
    # every results table file is shown (results.md: all of them in one file)
    mds = [p for p in (REPO / params["report"]["out_dir"]).glob("*.md") if p.name != "results.md"]
    assert mds and sum(len(s.tables) for s in sections) == len(mds)
    # control: a table listing an evaluation twice still shows its figures once
    twice = json.loads(json.dumps(params))
    first = next(iter(twice["report"]["tables"].values()))
    first["rows"]["again"] = next(iter(first["rows"].values()))
    again = [p for s in D.plan(twice, REPO)[0] for p in s.plots]
    assert again == plots


def test_page_template_loads_no_network_script():
    base = (REPO / D.TEMPLATE).read_text()
    page = D.page_template(base, [D.Section("t", "T", "what", ["t_roc"])], {"t_roc": {"a/roc.csv": "Row A"}})
    assert "{plot_divs}" in page and "{scripts}" not in page  # DVC's CDN scripts never inserted
    scripts = [line for line in page.splitlines() if "<script src=" in line]
    assert len(scripts) == 3 and not [s for s in scripts if "http" in s]
    assert "data-plot='t_roc'" in page and '"Row A"' in page
    # the Vega templates the dvc.yaml plots name exist
    for name in ("runs", "runs_seeds", "confusion_rows"):
        assert json.loads((REPO / ".dvc/plots" / f"{name}.json").read_text())["data"]["values"] == "<DVC_METRIC_DATA>"


class _Panels(HTMLParser):
    """Per element id in ``ids``: whether it drew (a Vega data mark with geometry, or a decoded image)."""

    def __init__(self, ids):
        super().__init__()
        self.ids, self.drawn = set(ids), {}
        self.stack: list[tuple[str, str | None, bool]] = []  # (tag, panel id, inside a data mark)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        panel = a.get("id") if a.get("id") in self.ids else (self.stack[-1][1] if self.stack else None)
        mark = ("role-mark" in (a.get("class") or "")) or bool(self.stack and self.stack[-1][2])
        if panel is not None:
            self.drawn.setdefault(panel, False)
            if tag == "path" and mark and len(a.get("d") or "") > 2:
                self.drawn[panel] = True
            if tag == "img" and int(a.get("data-natural-width") or 0) > 0:
                self.drawn[panel] = True
        if tag not in {"img", "br", "meta", "link", "input", "path", "rect", "line"}:
            self.stack.append((tag, panel, mark))

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break


def _chromium(args, profile: Path) -> str:
    if CHROMIUM is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI must run the browser test (.ci/run installs chromium)")
        pytest.skip("no chromium")
    out = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _count(page: Path, panels: dict, profile: Path) -> tuple[dict, str]:
    dom = _chromium(["--dump-dom", page.as_uri()], profile)
    ids = [i for plots in panels["sections"].values() for i in plots]
    parser = _Panels(ids)
    parser.feed(dom)
    return {i: parser.drawn.get(i, False) for i in ids}, dom


def test_dashboard_draws_every_panel_offline(tmp_path):
    if not all((REPO / D.SCRIPTS_DIR / s).is_file() for s in D.SCRIPTS):
        pytest.fail(f"{D.SCRIPTS_DIR}: the Vega scripts are missing (make setup installs them)")
    out = tmp_path / "page"
    panels = D.build(REPO, out, DVC)
    expected = panels["vega"] + panels["image"]
    assert panels["vega"] >= 2 * len(_params()["report"]["tables"]) and panels["image"] > 0

    drawn, dom = _count(out / "index.html", panels, tmp_path / "profile")
    empty = sorted(i for i, ok in drawn.items() if not ok)
    assert not empty, f"{len(empty)} of {expected} panels did not draw: {empty[:10]}"
    assert sum(drawn.values()) == expected
    assert f'data-vega-done="{panels["vega"]}"' in dom and 'data-vega-failed="0"' in dom
    assert 'class="slot-missing"' not in dom  # every planned slot got its DVC plot

    shots = {"first.png": ("1400,1000", ""), "comparison.png": ("1400,1500", "?only=f3net")}
    for name, (size, query) in shots.items():
        _chromium(
            [f"--window-size={size}", f"--screenshot={tmp_path / name}", out.joinpath("index.html").as_uri() + query],
            tmp_path / "profile",
        )
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    if os.environ.get("DFPIPE_SCREENSHOT_DIR"):
        dest = Path(os.environ["DFPIPE_SCREENSHOT_DIR"])
        dest.mkdir(parents=True, exist_ok=True)
        for name in shots:
            shutil.copyfile(tmp_path / name, dest / f"dashboard_{name}")

    # control: DVC's default CDN scripts (blocked here) and one image pointing nowhere
    text = (out / "index.html").read_text()
    for s, url in zip(D.SCRIPTS, ("vega@5.20.2", "vega-lite@5.2.0", "vega-embed@6.18.2")):
        text = text.replace(f'src="vendor/{s}"', f'src="https://cdn.jsdelivr.net/npm/{url}"')
    img = next(i for plots in panels["sections"].values() for i in plots if i.endswith("_png"))
    at = text.index(f'id="{img}"')
    at = text.index('src="', at) + len('src="')
    text = text[:at] + "static/nowhere.png" + text[text.index('"', at) :]
    (out / "cdn.html").write_text(text)
    drawn, _ = _count(out / "cdn.html", panels, tmp_path / "profile2")
    vega = [i for plots in panels["sections"].values() for i in plots if not i.endswith("_png")]
    assert not any(drawn[i] for i in vega), "a Vega panel drew from a CDN with the network blocked"
    assert not drawn[img]
    assert sum(drawn.values()) == panels["image"] - 1
