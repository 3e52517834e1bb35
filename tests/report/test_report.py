"""The HTML report: self-contained, responsive, and rendered by a real browser."""

from __future__ import annotations

import re
import subprocess

import numpy as np


def test_report_is_self_contained(digits_run):
    html = (digits_run / "report.html").read_text()
    assert '<meta name="viewport"' in html and "@media" in html
    imgs = re.findall(r'<img [^>]*src="([^"]+)"', html)
    assert len(imgs) == 3 and all(s.startswith("data:image/png;base64,") for s in imgs)
    assert not re.search(r'(src|href)="(http|file|/)', html)  # nothing outside the file
    for claim in ("Overview", "paper-fig1", "init-scale", "Verdict", "Source.", "Setup."):
        assert claim in html


def test_report_renders_in_chromium(chromium, digits_run, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
         "--window-size=1200,2000", (digits_run / "report.html").resolve().as_uri()],
        capture_output=True, text=True, timeout=90)
    assert shot.is_file(), proc.stderr[-2000:]
    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (2000, 1200)
    assert float(np.var(pixels[..., :3])) > 1e-3  # not blank


def test_report_has_intervals_and_published_beside_measured(digits_run):
    html = (digits_run / "report.html").read_text()
    assert "Published beside measured" in html and "Ours: mean [95% interval]" in html
    assert "Ioffe &amp; Szegedy 2015" in html and "(precondition)" not in html
    assert html.count('class="v v-') >= 2 * 2   # a verdict per criterion and per experiment


def test_markdown_tables_come_from_results_json(digits_run, tmp_path):
    import json
    import shutil

    from tests.commands import normlab

    out = tmp_path / "copy"
    shutil.copytree(digits_run, out)
    proc = normlab("report", out, "--markdown", out / "RESULTS.md")
    assert proc.returncode == 0, proc.stderr
    md = (out / "RESULTS.md").read_text()
    res = json.loads((out / "results.json").read_text())
    for name, e in res["experiments"].items():
        assert f"| `{name}` | **{e['verdict']}** |" in md
        for c in e["criteria"]:
            assert c["part"] in md
    assert "Published beside measured" in md and md.count("| `paper-fig1` |") == 1 + len(
        res["experiments"]["paper-fig1"]["published"])


def test_report_keeps_demonstrations_apart_and_states_the_design_history(digits_run,
                                                                         tmp_path):
    import json
    import shutil

    from tests.commands import normlab

    html = (digits_run / "report.html").read_text()
    res = json.loads((digits_run / "results.json").read_text())
    init = res["experiments"]["init-scale"]
    demos = [c for c in init["criteria"] if c["role"] == "demonstration"]
    assert len(demos) == 2 and all(c["verdict"] in ("shown", "not shown") for c in demos)
    assert html.count("<h3>Demonstrations (cannot fail by construction") == 1   # init-scale only
    assert "paired bootstrap of the test examples" in res["intervals_method"]
    assert "Holm" in res["combination_rule"] and "1000-1004" in res["confirmatory_rule"]
    assert init["pilot_seeds"] and init["design_changes"][0]["what"].startswith("BN eps 1e-5")
    assert "BN eps 1e-5 -&gt; 1e-6" in html and "Piloted on:" in html
    out = tmp_path / "copy"
    shutil.copytree(digits_run, out)
    assert normlab("report", out, "--markdown", out / "R.md").returncode == 0
    md = (out / "R.md").read_text()
    assert "| demonstrations (cannot fail; never make a claim hold) |" in md
    assert "- **`init-scale`**, piloted on:" in md and "BN eps 1e-5 -&gt; 1e-6" in md
