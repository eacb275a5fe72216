"""The report stage renders one self-contained page from real stage outputs, checked in a real
headless Chromium: it loads with no request leaving the file, every image decodes, and the key
figures are there."""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.helpers import REPO, ScratchRepo, make_folder_dataset

# Runs inside the page on load (appended to a copy of the report) and leaves its findings in an
# attribute that --dump-dom prints: resources fetched (data: URIs make none; a failed network
# fetch still makes an entry) and each image's decoded width.
PROBE = """<script>
window.addEventListener("load", () => {
  document.documentElement.dataset.probe = JSON.stringify({
    resources: performance.getEntriesByType("resource").map(e => e.name),
    images: [...document.images].map(i => ({section: i.closest("section")?.id || "",
                                            alt: i.alt, ok: i.complete && i.naturalWidth > 0})),
    sections: [...document.querySelectorAll("main > section")].map(s => s.id),
  });
});
</script>"""
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--hide-scrollbars",
                  "--virtual-time-budget=10000"]


def chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)


def browse(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """Open ``page`` in a fresh headless Chromium profile."""
    exe = chromium()
    if exe is None:
        pytest.skip("chromium not installed (CI installs Debian's `chromium` in .ci/run)")
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    proc = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"chromium failed:\n{proc.stderr[-2000:]}"
    return proc


def external_references(dom: str) -> list[str]:
    """Every reference in the DOM a browser would fetch from outside the page itself."""
    found = [v for v in re.findall(r'\ssrc="([^"]*)"', dom) if not v.startswith("data:image/")]
    found += re.findall(r"<link\b[^>]*>", dom)
    found += [v for v in re.findall(r"url\(\s*['\"]?([^'\")]*)", dom) if not v.startswith("data:")]
    found += re.findall(r'<script\b[^>]*\bsrc=', dom)
    # links to metrics files are relative navigation; absolute URLs would point off the page
    found += [v for v in re.findall(r'\shref="([^"]*)"', dom) if re.match(r"[a-z][a-z0-9+.-]*:|//", v)]
    return found


def check_in_browser(report: Path, tmp: Path) -> dict:
    """Load the report in Chromium; return the probe's findings after asserting it loaded cleanly."""
    text = report.read_text(encoding="utf-8")
    assert external_references(text) == [], "the report must inline every resource"
    probe_page = tmp / "probe" / "report.html"
    probe_page.parent.mkdir(parents=True, exist_ok=True)
    probe_page.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = browse(probe_page, tmp, "--dump-dom").stdout
    match = re.search(r'data-probe="([^"]*)"', dom)
    assert match, f"the page's load event never fired:\n{dom[:500]}"
    probe = json.loads(html.unescape(match.group(1)))
    assert probe["resources"] == [], f"the page fetched resources: {probe['resources']}"
    broken = [i for i in probe["images"] if not i["ok"]]
    assert probe["images"] and not broken, f"images that did not decode: {broken}"
    assert external_references(dom) == []

    shot = tmp / "report.png"
    browse(report, tmp, f"--screenshot={shot}", "--window-size=1280,2400")
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (2400, 1280) and pixels.std() > 20, "the screenshot looks blank"
    return probe


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """`dvc repro` of collect (folder source, a tiny labelled folder) + report in a scratch git
    repo with its own MLflow store, then `dvc exp run` of the report with one param changed."""
    tmp = tmp_path_factory.mktemp("report")
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    report = stages["report"]
    # only collect's outputs exist here: the report's other data deps are left out
    report["deps"] = [d for d in report["deps"] if not d.startswith(("data/", "metrics/"))
                      or d in ("data/raw", "metrics/collect_samples.png")]
    source = make_folder_dataset(tmp / "frames", n=4, size=(32, 64))
    repo = ScratchRepo(tmp / "repo", copy=("stages", "synthdrive"),
                       files={"dvc.yaml": yaml.safe_dump({"stages": {"collect": stages["collect"], "report": report}})},
                       params={"collect": {"source": "folder", "height": 32, "width": 64,
                                           "folder": {"path": str(source)}}},
                       mlflow_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    repo.init(commit="pipeline")
    repo.dvc("repro")
    work = repo.path
    baseline = (work / "metrics/report.html").read_text()
    baseline_commit = repo.sh("git", "rev-parse", "HEAD").stdout.strip()
    repo.commit("results")
    exp = repo.dvc("exp", "run", "-S", "report.caption_examples=3", "-n", "fewer-captions")
    return {"work": work, "tmp": tmp, "stdout": exp.stdout, "baseline": baseline,
            "baseline_commit": baseline_commit}


def test_report_opens_offline_in_chromium(rendered):
    probe = check_in_browser(rendered["work"] / "metrics/report.html", rendered["tmp"])
    assert {"data", "timings", "experiments"} <= set(probe["sections"])
    charts = {i["section"] for i in probe["images"]}
    assert {"data", "timings"} <= charts, "data and timings sections show their charts"


def test_numbers_link_to_their_files_and_page_names_its_revision(rendered):
    work = rendered["work"]
    page = (work / "metrics/report.html").read_text()
    frames = len((work / "data/raw/index.jsonl").read_text().splitlines())
    assert f'<a class="num" href="../data/raw/index.jsonl" title="from data/raw/index.jsonl">{frames}</a>' in page
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True).stdout.strip()
    assert commit in page and "dvc exp run -n fewer-captions" in page
    assert rendered["baseline_commit"] in rendered["baseline"] and "workspace (dvc repro" in rendered["baseline"]
    # the collect stage's MLflow run is timed, under the same parent as the baseline report
    assert re.search(r"<td>collect</td><td>\d+\.\d</td><td>[^<]+</td>\s*<td>this execution</td>",
                     rendered["baseline"])


def test_experiments_table_lists_the_experiment_and_the_param_that_differs(rendered):
    base = rendered["baseline"]
    assert "no DVC experiments yet" in base
    page = (rendered["work"] / "metrics/report.html").read_text()
    table = page[page.index('<section id="experiments">'):]
    assert "<th>report.caption_examples</th>" in table
    assert re.search(r"<td>master</td>.*?<td>6</td>", table, re.S)
    assert "<td>fewer-captions</td>" in table or "<td>workspace</td>" in table


def test_experiments_table_from_dvc_rows_keeps_types_files_and_headline_order():
    """provenance.exp_table over tracking.exp_rows' rows: params that differ (values as JSON),
    numeric metrics as file.json:key with the headline patterns first."""
    from synthdrive.report import provenance

    def row(name, typ, params, metrics):
        return {"name": name, "typ": typ, "rev": "abc1234", "state": None, "timestamp": None,
                "params": params, "metrics": metrics, "error": None}

    rows = [row("workspace", "baseline", {"a.n": 6, "a.same": "x", "a.l": [0]},
                {"metrics/eval.json:miou": 0.5, "metrics/fid.json:fid": 30, "metrics/eval.json:tag": "t"}),
            row("master", "baseline", {"a.n": 6, "a.same": "x", "a.l": [0]},
                {"metrics/eval.json:miou": 0.5, "metrics/fid.json:fid": 30}),
            row("e1", "experiment", {"a.n": 3, "a.same": "x", "a.l": [0, 1]},
                {"metrics/eval.json:miou": 0.6, "metrics/fid.json:fid": 30})]
    table = provenance.exp_table(rows, 5, ["fid.json:*"])
    assert table.param_columns == ["a.l", "a.n"] and table.note == ""
    assert table.metric_columns == ["fid.json:fid", "eval.json:miou"]
    assert [r["params"]["a.n"] for r in table.rows] == ["6", "6", "3"]
    assert table.rows[2]["params"]["a.l"] == "[0, 1]" and "eval.json:tag" not in table.rows[0]["metrics"]
    assert provenance.exp_table(rows[:2], 5, []).note.startswith("no DVC experiments yet")


def test_outside_git_missing_outputs_are_explained_not_faked(tmp_path, tracking_store):
    from synthdrive.report import render_report

    (tmp_path / "dvc.yaml").write_text("stages: {collect: {cmd: x}}\n")
    result = render_report(tmp_path, tmp_path / "metrics/report.html",
                           yaml.safe_load((REPO / "params.yaml").read_text())["report"])
    reasons = {i["title"]: i["reason"] for i in result["left_out"]}
    assert reasons["Data"] == "data/raw/index.jsonl not found: run `dvc repro collect`"
    assert "data" not in result["sections"]
    page = (tmp_path / "metrics/report.html").read_text()
    assert "Not in this report" in page and "dvc repro collect" in page
    assert "not a git repository" in page and "gave no table here" in page
    assert "no MLflow experiment" in page


def test_the_browser_check_catches_a_resource_that_is_not_inline(tmp_path):
    page = tmp_path / "page.html"
    page.write_text('<html><body><section id="s"><img alt="x" src="missing.png"></section></body></html>')
    assert external_references(page.read_text()) == ["missing.png"]
    page.write_text("<html><body><p>text</p></body></html>".replace("<p>", '<p style="background:url(x.png)">'))
    assert external_references(page.read_text()) == ["x.png"]
    page.write_text('<html><body><img alt="x" src="data:image/png;base64,AAAA"></body></html>')
    with pytest.raises(AssertionError, match="did not decode"):
        check_in_browser(page, tmp_path)


def test_full_tiny_pipeline_report_has_every_section(tiny_pipeline, tmp_path):
    """The report of the whole pipeline at tiny size (tests/tiny_params.yaml; the session's
    `dvc repro`, tests/pipeline/test_pipeline.py's): every stage in dvc.yaml feeds its section,
    and the page passes the browser check."""
    repo, _ = tiny_pipeline
    work = repo.path
    page = (work / "metrics/report.html").read_text()
    assert "Not in this report" not in page, page[page.index("Not in this report"):][:800]
    probe = check_in_browser(work / "metrics/report.html", tmp_path)
    assert {"data", "conditions", "captions", "generator", "synthesis", "segmentation", "fid", "signs",
            "timings", "experiments"} <= set(probe["sections"])
    pictured = {i["section"] for i in probe["images"]}
    assert {"data", "conditions", "generator", "synthesis", "segmentation", "signs", "timings"} <= pictured
