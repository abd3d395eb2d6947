"""Sphinx configuration of the gapkit documentation (MyST markdown, numpydoc API pages).

Build (offline, a few seconds; warnings are errors in CI)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The notebooks in ``../notebooks`` are rendered with their stored outputs, never
executed here (the test suite executes them).
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")

import gapkit  # noqa: E402

project = "gapkit"
author = "the gapkit authors"
copyright = "the gapkit authors, MIT licence"
release = gapkit.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_nb",                    # MyST markdown pages and .ipynb notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx.ext.mathjax",
]

# --- sources -----------------------------------------------------------------------
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
root_doc = "index"

# --- MyST --------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath"]
myst_heading_anchors = 3          # [text](page.md#a-heading) links, GitHub-style slugs

# --- notebooks: rendered with their stored outputs, never executed -------------------
nb_execution_mode = "off"
nb_merge_streams = True

# --- API reference -----------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "none"        # numpydoc's Parameters sections carry the types
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# --- output --------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"gapkit {release}"
html_static_path = []
html_theme_options = {"description": "Gaussian Approximation Potentials on SOAP, in Python",
                      "fixed_sidebar": True}
# No intersphinx: the build must work offline and fast.

templates_path = ["_templates"]
autosummary_ignore_module_all = False   # document what each module's __all__ lists

# The modules of the API reference, in the order of docs/api.md. An object that several
# of them export (gapkit.GAP is gapkit.model.GAP) is documented once, in the first, and
# the later pages link to it: one description per object, no duplicate targets.
API_MODULES = ["gapkit", "gapkit.descriptors", "gapkit.model", "gapkit.calculator",
               "gapkit.uncertainty", "gapkit.diagnostics", "gapkit.plotting",
               "gapkit.physics.baselines", "gapkit.physics.active", "gapkit.ipi",
               "gapkit.lammps", "gapkit.data"]


def _documented_elsewhere():
    import importlib
    import inspect

    home, elsewhere = {}, {}
    for name in API_MODULES:
        mod = importlib.import_module(name)
        public = getattr(mod, "__all__", None)
        if public is None:
            public = [k for k, v in vars(mod).items() if not k.startswith("_")
                      and (inspect.isclass(v) or inspect.isfunction(v))
                      and getattr(v, "__module__", "").startswith(name)]
        for key in public:
            obj = getattr(mod, key)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if id(obj) in home:
                elsewhere.setdefault(name, {})[key] = f"{home[id(obj)]}.{key}"
            else:
                home[id(obj)] = name
    return elsewhere


autosummary_context = {"documented_elsewhere": _documented_elsewhere()}
autodoc_default_options["exclude-members"] = ("set_fit_request, set_score_request, "
                                              "set_predict_request")

# The notebooks live in ../notebooks (the tests execute them there); copy them in so
# that Sphinx can render them (docs/notebooks/ is a build artefact, ignored by git).
_NB = HERE / "notebooks"
_NB.mkdir(exist_ok=True)
for _src in sorted((ROOT / "notebooks").glob("*.ipynb")):
    _dst = _NB / _src.name
    if not _dst.exists() or _dst.read_bytes() != _src.read_bytes():
        _dst.write_bytes(_src.read_bytes())
for _old in _NB.glob("*.ipynb"):
    if not (ROOT / "notebooks" / _old.name).exists():
        _old.unlink()
