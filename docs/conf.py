"""Sphinx configuration for gee-h's documentation (``make docs``).

Pages are Markdown (MyST). Conventions, also in docs/README.md:
- a how-to guide is a new file docs/howto/NAME.md: howto/index.md globs the folder, so it
  appears in the table of contents with no other edit;
- every ``python`` block and every ``geeh`` command in a ``sh`` block is run by
  tests/test_docs.py against a real etcd; ``127.0.0.1:2379`` stands for its endpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent / "src"))  # the code beside these docs, installed or not

import geeh  # noqa: E402

project = "gee-h"
author = "gee-h developers"
copyright = "2017 Carlos O'Ryan (the C++ gee-h); the gee-h developers"
release = version = geeh.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "geeh_cli",
]

exclude_patterns = ["_build", "README.md"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
suppress_warnings: list[str] = []
if not (HERE.parent / "benchmarks" / "results").is_dir():
    # An sdist carries no benchmark results, whose plots the benchmarks page shows.
    exclude_patterns.append("benchmarks.md")
    suppress_warnings.append("toc.not_readable")

html_theme = "furo"
html_title = f"gee-h {release}"

# The API reference: members in source order, signatures with their types.
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = False

# Warnings are errors (-W) and every cross-reference must resolve (-n). The standard
# library's inventory would come from the network (intersphinx), which the build must not
# need: its names are shown as plain text instead.
nitpicky = True
nitpick_ignore_regex = [
    (
        "py:(class|obj|exc|data|func|meth)",
        r"(asyncio|collections|concurrent|contextlib|datetime|enum|os|threading|time|types|typing)(\..*)?",
    ),
    ("py:(class|obj|exc)", r"(BaseException|Exception|ValueError|Any|None)"),
    ("py:(class|obj)", r"(geeh\.\w+\.)?T"),  # type variables
    # Internals that appear in signatures: the protobuf messages and the shared core.
    ("py:(class|obj)", r"geeh\._proto\..*|geeh\.core\.Core|geeh\.session\.NewSession"),
    ("py:(class|obj)", r"prometheus_client\..*"),  # another library's, as the stdlib's
]


def _public_name(target: str) -> str | None:
    """The name under which gee-h exports ``target``, if it does.

    ``geeh.client.Client`` and ``Client`` -> ``geeh.Client``; ``ElectionObserver.subscribe``
    and ``geeh.blocking.ElectionObserver.subscribe`` -> ``geeh.ElectionObserver.subscribe``.
    """
    parts = target.split(".")
    if parts[0] == "geeh":
        parts = parts[2:] if len(parts) > 2 and parts[1] not in geeh.__all__ else parts[1:]
    if parts and parts[0] in geeh.__all__:
        return ".".join(["geeh", *parts])
    return None


def _resolve_public(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Annotations name classes where they are defined (``geeh.election.Election``), or by
    a bare name under TYPE_CHECKING; the reference documents them where users import them.
    """
    if node.get("refdomain") != "py":
        return None
    target = _public_name(node.get("reftarget", ""))
    if target is None or target == node.get("reftarget"):
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], target, node, contnode
    )


def setup(app: Any) -> None:
    app.connect("missing-reference", _resolve_public)
