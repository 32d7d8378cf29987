"""Sphinx configuration for the dasktrain documentation.

Built offline: no intersphinx, no remote assets. ``make docs`` runs
``sphinx-build -W --keep-going -b html docs docs/_build/html`` so any warning fails the build.
"""

from __future__ import annotations

import os
import re
import sys

# Document the working tree, not an installed copy.
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

# Keep BLAS/torch from spawning a thread per core while autodoc imports the modules.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import shutil  # noqa: E402

import dasktrain  # noqa: E402

# autosummary writes its pages into the source tree. Start from a clean folder so a page left
# over from an older build (a module since renamed or removed) cannot linger as an orphan.
shutil.rmtree(os.path.join(os.path.dirname(__file__), "api", "generated"), ignore_errors=True)

project = "dasktrain"
author = "dasktrain developers"
copyright = "dasktrain developers"
version = dasktrain.__version__
release = dasktrain.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
    "numpydoc",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"

# -- autodoc / autosummary ---------------------------------------------------------------
autosummary_generate = True
# Packages such as dasktrain.features re-export their public names through __all__; follow it
# so each name is documented once, where users import it from.
autosummary_ignore_module_all = False
# Every public module declares __all__; some packages (dasktrain.features) load those names
# lazily and hide __all__ from dir(), so imported members must be allowed explicitly.
autosummary_imported_members = True
autodoc_default_options = {"member-order": "bysource"}
# Classes whose page also documents what they inherit (the class template reads this list):
# Results is the Outcome of a comparison with what prints and saves it (the harness's results
# never import its report), and its users read one page for both.
autosummary_context = {"with_inherited": ["Results"]}
autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types
# These fail to import on a machine without CUDA (dask_cuda) or are optional (NVML); the
# library only imports them lazily, but mocking keeps the build independent of the hardware.
autodoc_mock_imports = ["dask_cuda", "pynvml"]

# -- numpydoc ----------------------------------------------------------------------------
numpydoc_show_class_members = False  # the class template lists members itself
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()

# -- HTML --------------------------------------------------------------------------------
try:
    import pydata_sphinx_theme  # noqa: F401

    html_theme = "pydata_sphinx_theme"
    html_theme_options = {
        "navigation_with_keys": False,
        "show_toc_level": 2,
        "secondary_sidebar_items": ["page-toc"],
    }
    # Single pages have no section navigation: leave out the empty left sidebar.
    html_sidebars = {
        page: [] for page in ("index", "quickstart", "concepts", "deploying", "examples", "results")
    }
except ImportError:  # pragma: no cover - the docs extra installs it
    html_theme = "alabaster"
html_title = f"dasktrain {release}"
html_static_path: list[str] = []
html_show_sourcelink = False


# scikit-learn generates ``set_{fit,transform,...}_request`` on every estimator subclass; their
# docstrings point into scikit-learn's own glossary (warnings here) and say nothing about
# dasktrain, so they are left out of the API pages.
_SKLEARN_GENERATED = re.compile(r"^set_\w+_request$")


def _skip_sklearn_generated(app, what, name, obj, skip, options):
    if what == "class" and _SKLEARN_GENERATED.match(name):
        return True
    return None


# -- nitpicky cross-references -------------------------------------------------------------
# Every reference to a dasktrain object must resolve (tests/test_docs.py builds with -n -W).
nitpicky = True
# The build is offline (no intersphinx), so the other projects' objects cannot be linked; a
# reference to them is still written as one (it reads as code and links once intersphinx is
# allowed). Only names of these packages are let through: a typo in a dasktrain name is not.
_EXTERNAL = (
    "builtins|os|io|pathlib|numpy|np|pandas|pd|dask|dask_ml|distributed|Client|sklearn|"
    "skimage|scipy|torch|torchvision|tensorflow|keras|xgboost|PIL|zarr|fsspec|s3fs|psutil|"
    "bokeh|pynvml|dask_cuda|timm"
)
nitpick_ignore_regex = [(r"py:.*", rf"({_EXTERNAL})(\..*)?")]


def _documented(env):
    """``{full name: (role, docname, target)}`` of every Python object the build documents."""
    return env.get_domain("py").objects


def _resolve_missing(app, env, node, contnode):
    """Resolve what Python's domain cannot, when there is exactly one answer.

    ``dasktrain.compare``, ``dasktrain.read_images`` ...: the lazily re-exported top-level names
    point to where they are documented (``dasktrain.harness.compare``). A bare name
    (``ImageReadError``, ``ImageSet.skipped``) written in a module that does not import it
    resolves to the one documented dasktrain object whose name ends with it.
    """
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    objects = _documented(env)
    if target.startswith("dasktrain."):
        head, _, rest = target[len("dasktrain.") :].partition(".")
        module = getattr(dasktrain, "_LAZY", {}).get(head)
        if module is None:
            return None
        full = ".".join(filter(None, (module, head, rest)))
        candidates = [full] if full in objects else []
    else:
        candidates = [n for n in objects if n.startswith("dasktrain.") and n.endswith("." + target)]
        if not candidates:
            candidates = _owning_class(node, target, objects)
    if len(candidates) != 1:
        return None
    from sphinx.util.nodes import make_refnode

    entry = objects[candidates[0]]
    return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode)


def _owning_class(node, target, objects):
    """``[class]`` when ``target`` is an attribute of the documented class the reference is
    written in but is not documented on its own (a property inherited from a private base,
    such as ``feature_importances_``): the class page describes it under Attributes."""
    import importlib

    module, cls = node.get("py:module"), node.get("py:class")
    full = f"{module}.{cls}"
    if not module or not cls or full not in objects:
        return []
    try:
        owner = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        return []
    return [full] if hasattr(owner, target) else []


def _public_bases(app, name, obj, options, bases):
    """Leave private classes (a ``_`` in the module path or the name) out of "Bases:"; their
    public ancestors are listed instead, so a reader still sees what the class is."""
    public, todo = [], list(bases)
    while todo:
        base = todo.pop(0)
        path = f"{base.__module__}.{base.__qualname__}"
        if any(part.startswith("_") for part in path.split(".")) and base is not object:
            todo[:0] = [b for b in base.__bases__ if b not in public and b is not object]
        elif base not in public:
            public.append(base)
    bases[:] = public or [object]


def setup(app):
    app.connect("autodoc-skip-member", _skip_sklearn_generated)
    app.connect("missing-reference", _resolve_missing)
    app.connect("autodoc-process-bases", _public_bases)
