"""The documentation site: it builds with warnings as errors, every page is there with its
figures, no internal link or anchor is broken, it loads nothing from the network, and the home
page and a tutorial render in headless Chromium.

The site is built once per test session (about a minute: the tutorials run), from a copy of
docs/ so that a parallel build never writes into the checkout; the tests that use it share one
xdist worker (``xdist_group``; ``make test`` runs pytest with ``--dist loadgroup``).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[1]
DOCS_MODULES = ("sphinx", "sphinx_gallery", "pydata_sphinx_theme", "myst_parser")
TUTORIALS = sorted(p.stem for p in (ROOT / "docs" / "tutorials").glob("[0-9][0-9]_*.py"))
API_PAGES = ("normlab.functional", "normlab.nn", "normlab.nn.init", "normlab.optim",
             "normlab.fold", "normlab.torch", "cli")
TUTORIAL_LIMIT_S = 60   # each tutorial must run in under a minute on a laptop CPU

pytestmark = pytest.mark.xdist_group("docs_site")


@pytest.fixture(scope="session")
def site(tmp_path_factory, torch) -> Path:
    """Build the site (sphinx-build -W, as ``make docs``) into a temporary folder."""
    require("the docs extra (" + ", ".join(DOCS_MODULES) + ")",
            all(importlib.util.find_spec(m) for m in DOCS_MODULES), "pip install -e '.[docs]'")
    base = tmp_path_factory.mktemp("docs")
    src, out = base / "docs", base / "site"
    shutil.copytree(ROOT / "docs", src, ignore=shutil.ignore_patterns(
        "api", "auto_tutorials", "sg_execution_times.rst", "__pycache__"))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                        os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q",
                           "-b", "html", str(src), str(out)],
                          capture_output=True, text=True, timeout=900, env=env, cwd=base)
    assert proc.returncode == 0, (proc.stdout[-3000:] + proc.stderr[-6000:])
    return out


# -- reading the built HTML ----------------------------------------------------------------
class _Page(HTMLParser):
    """The ids (anchors) a page defines and the (tag, url) of every link or resource it uses."""

    LINKS = {("a", "href"), ("link", "href"), ("img", "src"), ("script", "src"),
             ("iframe", "src"), ("source", "src")}

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value is None:
                continue
            if name == "id" or (tag == "a" and name == "name"):
                self.ids.add(value)
            if (tag, name) in self.LINKS:
                self.links.append((tag, value))


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


EXTERNAL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*:|//)")


def _pages(site_dir: Path) -> list[Path]:
    """The site's HTML pages; ``_static/`` holds the theme's assets (and a template of it)."""
    return [p for p in site_dir.rglob("*.html")
            if "_static" not in p.relative_to(site_dir).parts]


def broken_internal_links(site_dir: Path) -> list[str]:
    """Every relative link of every page whose file is missing (or outside the site), or whose
    ``#anchor`` is not an id of the page it points to."""
    site_dir = site_dir.resolve()
    pages = {p.resolve(): _parse(p) for p in _pages(site_dir)}
    problems = []
    for path, page in pages.items():
        for _tag, url in page.links:
            if not url or EXTERNAL.match(url):
                continue
            parts = urlsplit(url)
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            where = f"{path.relative_to(site_dir)}: {url}"
            if not target.is_relative_to(site_dir) or not target.is_file():
                problems.append(f"{where} (no such file)")
            elif parts.fragment and target.suffix == ".html" \
                    and unquote(parts.fragment) not in pages[target].ids:
                problems.append(f"{where} (no such anchor)")
    return problems


def network_resources(site_dir: Path) -> list[str]:
    """Scripts, stylesheets, images and frames a page would fetch from another host."""
    return [f"{p.relative_to(site_dir)}: {url}" for p in _pages(site_dir)
            for tag, url in _parse(p).links if tag != "a" and EXTERNAL.match(url)
            and not url.startswith("data:")]


# -- the site ------------------------------------------------------------------------------
def test_every_page_is_built_with_its_content(site):
    for page in ("index", "about", "auto_tutorials/index", "api/index", "api/cli"):
        assert (site / f"{page}.html").is_file(), page
    assert len(TUTORIALS) == 7
    for name in TUTORIALS:
        html = (site / "auto_tutorials" / f"{name}.html").read_text(encoding="utf-8")
        assert "sphx-glr-single-img" in html or "sphx-glr-multi-img" in html, \
            f"{name}: no figure"
        assert 'class="sphx-glr-script-out' in html, f"{name}: no executed output"
    from tests.test_docstrings import public_api
    for modname in public_api.PACKAGES:        # every public name has its entry
        ids = _parse(site / "api" / f"{modname}.html").ids
        module = public_api.load(modname)
        missing = [n for n in public_api.public_names(module)
                   if f"{modname}.{n}" not in ids and not isinstance(getattr(module, n), type(os))]
        assert missing == [], modname
    cli = (site / "api" / "cli.html").read_text(encoding="utf-8")
    for command in ("normlab reproduce", "normlab report", "normlab fold", "--input-shape",
                    "--trust-model", "--sync-bn"):
        assert command in cli
    assert "--steps-scale" not in cli       # hidden options stay hidden


def test_each_tutorial_runs_in_under_a_minute(site):
    for name in TUTORIALS:
        html = (site / "auto_tutorials" / f"{name}.html").read_text(encoding="utf-8")
        minutes, seconds = re.search(r"Total running time of the script:</strong> "
                                     r"\((\d+) minutes ([\d.]+) seconds\)", html).groups()
        assert 60 * int(minutes) + float(seconds) < TUTORIAL_LIMIT_S, (name, minutes, seconds)


def test_no_page_has_a_broken_internal_link(site):
    assert len(_pages(site)) >= 15
    assert broken_internal_links(site) == []


def test_the_site_loads_nothing_from_the_network(site):
    assert network_resources(site) == []


def test_the_link_check_finds_planted_breakage(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "index.html").write_text(
        '<h1 id="top">x</h1><a href="sub/page.html#here">ok</a><a href="#top">ok</a>'
        '<a href="https://example.org/x">external</a><a href="gone.html">missing</a>'
        '<a href="sub/page.html#nowhere">no anchor</a><img src="../outside.png">'
        '<script src="https://cdn.example.org/x.js"></script>')
    (tmp_path / "sub" / "page.html").write_text('<p id="here"><a href="../index.html">up</a>')
    assert broken_internal_links(tmp_path) == [
        "index.html: gone.html (no such file)",
        "index.html: sub/page.html#nowhere (no such anchor)",
        "index.html: ../outside.png (no such file)"]
    assert network_resources(tmp_path) == ["index.html: https://cdn.example.org/x.js"]


# -- in a browser --------------------------------------------------------------------------
def screenshot(chromium: str, url: str, shot: Path, profile: Path, size=(1280, 1000)):
    """A headless Chromium screenshot of ``url`` as an (H, W, channels) float array."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
         "--hide-scrollbars", f"--screenshot={shot}", url],
        capture_output=True, text=True, timeout=120)
    assert shot.is_file(), proc.stderr[-2000:]
    return mpimg.imread(shot)


def rendered(pixels: np.ndarray) -> tuple[float, float]:
    """(share of pixels that are not the page background, share of coloured pixels)."""
    rgb = pixels[..., :3]
    background = np.median(rgb.reshape(-1, 3), axis=0)
    ink = float(np.mean(np.abs(rgb - background).max(axis=-1) > 0.1))
    colour = float(np.mean(rgb.max(axis=-1) - rgb.min(axis=-1) > 0.25))
    return ink, colour


def test_home_and_a_tutorial_render_in_chromium(site, chromium, tmp_path):
    home = screenshot(chromium, (site / "index.html").as_uri(), tmp_path / "home.png",
                      tmp_path / "profile")
    assert home.shape[:2] == (1000, 1280)
    ink, _ = rendered(home)
    assert ink > 0.03, ink                       # text, tables and the navigation bar
    tutorial = screenshot(chromium, (site / "auto_tutorials" / "05_other_norms.html").as_uri(),
                          tmp_path / "tutorial.png", tmp_path / "profile", size=(1280, 2600))
    ink, colour = rendered(tutorial)
    # coloured: the first figure's blue cells and the code's highlighting (0.8% when measured)
    assert ink > 0.05 and colour > 0.004, (ink, colour)


def test_the_render_check_sees_a_blank_page(chromium, tmp_path):
    blank = tmp_path / "blank.html"
    blank.write_text("<!doctype html><title>blank</title><body></body>")
    ink, colour = rendered(screenshot(chromium, blank.as_uri(), tmp_path / "blank.png",
                                      tmp_path / "profile"))
    assert ink < 0.03 and colour < 0.004
