"""Sphinx configuration of jaxvis's documentation site: `make docs` builds it into docs/_build/html.

The API reference is generated from the docstrings (autodoc); the tutorials are MyST notebooks that
myst-nb executes at every build, on the models that ship with the package.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "docs", "_ext"))

import jaxvis  # noqa: E402

project = "jaxvis"
author = "the jaxvis authors"
copyright = "2026, the jaxvis authors"
release = version = jaxvis.__version__

extensions = [
    "myst_nb",
    "autodoc2",
]

# Pages that are not part of the site: the build, the tables the study pages include, the screenshot script.
exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
    "accentuation.md",
    "detection_study.md",
    "feature_vis_shapes.md",
    "feature_vis_ssd.md",
    "feature_vis_ssd_lab.md",
    "**.ipynb_checkpoints",
]

# No math extension: the site reads offline, and MathJax would come from a CDN.
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
# Docstrings mark their sections with underlined titles, which sit below the page's own title.
suppress_warnings = ["myst.header"]

# Every tutorial is executed at every build, so that each picture and number is what the code does today.
nb_execution_mode = "force"
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

# ``name`` in a docstring is code, as in the rest of the project's text.
default_role = "code"
# The API reference: read from the source (nothing is imported), docstrings read as MyST markdown with
# Google-style sections (docs/_ext/jaxvis_sphinx.py).
autodoc2_packages = [{"path": "../jaxvis", "auto_mode": False}]
autodoc2_docstring_parser_regexes = [(r".*", "jaxvis_sphinx")]
autodoc2_render_plugin = "jaxvis_sphinx.Renderer"
autodoc2_hidden_objects = ["private", "inherited", "dunder"]
autodoc2_class_docstring = "both"

html_theme = "sphinx_book_theme"
html_title = "jaxvis"
html_static_path = ["_static"]
html_css_files = ["jaxvis.css"]
html_context = {"default_mode": "light"}
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
html_last_updated_fmt = None
