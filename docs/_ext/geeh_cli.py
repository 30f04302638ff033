"""The ``geeh-cli`` directive: the CLI reference, generated from the command's own parser.

Each command gets a section holding exactly what ``geeh COMMAND --help`` prints, taken from
:func:`geeh.cli.build_parser`, so the reference cannot drift from the command.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from typing import Any

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

# Help text is wrapped to the terminal width; the page is wrapped to this one.
WIDTH = "90"


def subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every sub-command's name and parser, in the order ``geeh --help`` lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:  # aliases share a parser
                    seen.add(id(sub))
                    yield name, sub


def help_text(parser: argparse.ArgumentParser) -> str:
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        return parser.format_help()
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


class GeehCli(SphinxDirective):
    """``geeh --help``, then one section per sub-command with its ``--help``."""

    has_content = False

    def section(self, title: str, text: str) -> nodes.section:
        section = nodes.section(
            ids=[nodes.make_id(title)], names=[nodes.fully_normalize_name(title)]
        )
        section += nodes.title(title, "", nodes.literal(title, title))
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        section += block
        self.state.document.note_implicit_target(section, section)
        return section

    def run(self) -> list[nodes.Node]:
        from geeh.cli import build_parser

        parser = build_parser()
        result: list[nodes.Node] = [self.section("geeh", help_text(parser))]
        for name, sub in subcommands(parser):
            result.append(self.section(f"geeh {name}", help_text(sub)))
        return result


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("geeh-cli", GeehCli)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
