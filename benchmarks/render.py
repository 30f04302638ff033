"""A small template renderer: Markdown whose prose people write, with fields from the results.

- ``{{ path }}``: the value at ``path`` in the results, keys separated by dots
  (``handoff.1-member.gee-h.median``); a list is indexed by number.
- ``{{ path | FORMAT }}``: ``ms`` is seconds shown as milliseconds with two decimals; any
  other FORMAT is a Python format spec (``.2f``, ``.0%``, ``,d``).
- ``{{ a / b | FORMAT }}``: the ratio of two values.
- ``<!-- if path -->`` ... ``<!-- end path -->``: kept if ``path`` is there and not empty,
  else dropped (a stage that was not run, a figure a quick run lacks); blocks of different
  paths may nest.

A field whose path names nothing is an error that names the field and its line in the
rendered text: a typo in the
prose fails the report instead of printing a blank. A missing (null) figure prints "n/a".
"""

from __future__ import annotations

import re
from typing import Any

FIELD = re.compile(r"\{\{\s*(.*?)\s*\}\}")
BLOCK = re.compile(r"<!-- if (\S+) -->\n?(.*?)<!-- end \1 -->\n?", re.S)


class TemplateError(Exception):
    """A field or block of the template that the results cannot fill."""


_MISSING = object()


def lookup(values: Any, path: str) -> Any:
    """The value at a dotted path, or _MISSING."""
    node = values
    for key in path.split("."):
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return _MISSING
    return node


def _value(values: Any, path: str, where: str) -> Any:
    value = lookup(values, path)
    if value is _MISSING:
        raise TemplateError(f"{where}: {path!r} names no figure of the results")
    return value


def format_value(value: Any, spec: str = ".2f") -> str:
    """``value`` as the template's ``| spec`` shows it (``""``: as it is; None: n/a)."""
    if value is None:
        return "n/a"
    if spec == "ms":
        return f"{value * 1000:.2f}"
    return format(value, spec) if spec else str(value)


def field(values: Any, expr: str, where: str) -> str:
    """One ``{{ ... }}`` field: a path or a ratio of two, and an optional format."""
    what, _, spec = expr.partition("|")
    paths = [p.strip() for p in what.split(" / ")]
    if not all(paths) or len(paths) > 2:
        raise TemplateError(f"{where}: cannot read the field {{{{ {expr} }}}}")
    value = _value(values, paths[0], where)
    if len(paths) == 2:
        divisor = _value(values, paths[1], where)
        value = None if value is None or not divisor else value / divisor
    return format_value(value, spec.strip())


def render(template: str, values: dict[str, Any]) -> str:
    """The template with its blocks resolved and every field filled from ``values``."""

    def block(m: re.Match[str]) -> str:
        kept = lookup(values, m.group(1)) not in (_MISSING, None, {}, [], "")
        return BLOCK.sub(block, m.group(2)) if kept else ""

    text = BLOCK.sub(block, template)
    if "<!-- if " in text or "<!-- end " in text:
        at = text[: text.find("<!-- ")].count("\n") + 1
        raise TemplateError(f"line {at}: an if/end block that does not close or open")
    out = []
    for n, line in enumerate(text.split("\n"), start=1):

        def fill(m: re.Match[str], n: int = n) -> str:
            return field(values, m.group(1), f"line {n}, {m.group(0)}")

        out.append(FIELD.sub(fill, line))
    return "\n".join(out)
