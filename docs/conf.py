"""Sphinx configuration of the documentation site (``make docs`` builds it into site/).

Why Sphinx, sphinx-gallery and this theme: about.md. The API pages and the CLI page are
generated at build time (``_ext/api_pages.py``); the tutorials in ``tutorials/`` are plain
Python scripts that sphinx-gallery runs on every build, so their numbers and figures are those
of the code as it is.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
# The tutorials' small matmuls: one BLAS thread, as the normlab command does (cli/__init__.py).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import normlab  # noqa: E402

project = "normlab"
author = "the normlab authors"
copyright = "normlab authors, MIT licence"
release = version = normlab.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
    "api_pages",
]
# "--arch" stays two hyphens (the CLI page), quotes stay straight.
smartquotes = False
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_ext", "tutorials", "**/*.ipynb", "**/*.zip",
                    "**/*.codeobj.json", "**/*.md5"]
root_doc = "index"
# Anchors for the headings of the guide pages, so a page can link to a section of another.
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"exclude-members": "__init__"}
autoclass_content = "both"
# autodoc imports normlab.torch, which needs torch: the docs extra installs it with the pin.
autodoc_mock_imports: list[str] = []

sphinx_gallery_conf = {
    "examples_dirs": "tutorials",
    "gallery_dirs": "auto_tutorials",
    # Run every tutorial in file-name order; a tutorial that raises fails the build.
    "filename_pattern": r"/\d\d_",
    "within_subsection_order": "FileNameSortKey",
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "download_all_examples": False,
    "show_memory": False,
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "capture_repr": ("_repr_html_", "__repr__"),
    "plot_gallery": "True",
    # Run every tutorial on every build, not only those whose source changed: a change in
    # normlab must show (or fail) in the tutorials.
    "run_stale_examples": True,
    # No sg_execution_times pages: they load jQuery from a CDN, and each tutorial page already
    # ends with its running time.
    "write_computation_times": False,
}

html_theme = "pydata_sphinx_theme"
html_title = "normlab"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_align": "left",
    "header_links_before_dropdown": 5,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {"index": [], "about": [], "api/*": []}
html_show_sourcelink = False
# Every asset is local: the site opens from site/index.html without a network.
html_copy_source = False
