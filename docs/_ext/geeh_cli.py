"""The ``geeh-cli`` directive: the CLI reference, generated from the command's own parser.

Each command gets a section (anchor ``geeh-COMMAND``) with its usage, its description, one
entry per argument and option (anchor ``geeh-COMMAND-OPTION``, e.g. ``geeh-elect-ttl``:
each can be linked, from this site with ``{ref}`` too) and its epilog, all taken from
:func:`geeh.cli.build_parser`, so the reference cannot drift from ``--help``.
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
# The group every connecting command repeats from ``geeh`` itself: shown once, linked.
SHARED_GROUP = "connection"


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
    """Exactly what ``--help`` prints (the test of the reference compares with it)."""
    with columns():
        return parser.format_help()


class columns:
    """COLUMNS set to the page's width while argparse formats."""

    def __enter__(self) -> None:
        self.previous = os.environ.get("COLUMNS")
        os.environ["COLUMNS"] = WIDTH

    def __exit__(self, *exc: object) -> None:
        if self.previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = self.previous


def groups(parser: argparse.ArgumentParser) -> list[tuple[str, list[argparse.Action]]]:
    """The parser's argument groups with the actions ``--help`` shows, in its order."""
    shown = []
    for group in parser._action_groups:
        actions = [
            a
            for a in group._group_actions
            if a.help != argparse.SUPPRESS and not isinstance(a, argparse._SubParsersAction)
        ]
        if actions:
            shown.append((group.title or "", actions))
    return shown


def invocation(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """How ``--help`` spells an argument: ``NAME``, ``--ttl S``, ``-w, --watch``."""
    with columns():
        formatter = parser._get_formatter()
        return formatter._format_action_invocation(action)


def explanation(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    with columns():
        formatter = parser._get_formatter()
        return " ".join(formatter._expand_help(action).split()) if action.help else ""


def anchor_name(command: str, action: argparse.Action) -> str:
    """``geeh elect`` and ``--ttl`` -> ``geeh-elect-ttl``; a positional by its metavar."""
    spelled = max(action.option_strings, key=len) if action.option_strings else action.metavar
    return nodes.make_id(f"{command} {spelled or action.dest}")


def anchors(parser: argparse.ArgumentParser) -> list[str]:
    """Every anchor the page gets, in order: a section per command, an entry per argument."""
    found = []
    for command, sub in [("geeh", parser), *((f"geeh {n}", p) for n, p in subcommands(parser))]:
        found.append(nodes.make_id(command))
        for title, actions in groups(sub):
            if sub is parser or title != SHARED_GROUP or not shared_group(parser, sub):
                found += [anchor_name(command, action) for action in actions]
    return found


def shared_group(parser: argparse.ArgumentParser, command: argparse.ArgumentParser) -> bool:
    """Whether ``command``'s connection options are exactly ``geeh``'s (shown once)."""

    def spelled(p: argparse.ArgumentParser) -> list[list[str]]:
        return [a.option_strings for t, acts in groups(p) if t == SHARED_GROUP for a in acts]

    return spelled(parser) == spelled(command)


class GeehCli(SphinxDirective):
    """``geeh``, then one section per sub-command, every argument with an anchor."""

    has_content = False

    def target(self, node: nodes.Element, name: str) -> None:
        """Give ``node`` the id ``name``: an explicit target, so Sphinx makes it a label
        other pages can ``{ref}`` (with a title of their own for an option)."""
        node["ids"].append(name)
        node["names"].append(name)
        self.state.document.note_explicit_target(node, node)

    def literal(self, text: str) -> nodes.literal_block:
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return block

    def entries_for(
        self, command: str, parser: argparse.ArgumentParser, actions: list[argparse.Action]
    ) -> nodes.definition_list:
        entries = nodes.definition_list()
        for action in actions:
            spelled = invocation(parser, action)
            item = nodes.definition_list_item()
            term = nodes.term()
            self.target(term, anchor_name(command, action))  # HTML: <dt id=...>
            term += nodes.literal(spelled, spelled)
            item += term
            definition = nodes.definition()
            text = nodes.paragraph(text=explanation(parser, action))
            text["support_smartquotes"] = False  # "--endpoints" stays two hyphens
            definition += text
            item += definition
            entries += item
        return entries

    def section(
        self, command: str, parser: argparse.ArgumentParser, shared: nodes.section | None
    ) -> nodes.section:
        section = nodes.section()
        self.target(section, nodes.make_id(command))
        section += nodes.title(command, "", nodes.literal(command, command))
        with columns():
            section += self.literal(parser.format_usage().strip())
        if parser.description:
            section += self.literal(parser.description.rstrip())
        for title, actions in groups(parser):
            if title == SHARED_GROUP and shared is not None and self.same_connection(parser):
                paragraph = nodes.paragraph(text="Connection options: those of ")
                link = nodes.reference("", "", internal=True, refid=shared["ids"][0])
                link += nodes.literal("geeh", "geeh")
                paragraph += link
                paragraph += nodes.Text(", given after the command name.")
                section += paragraph
                continue
            section += nodes.rubric(text=title.capitalize())
            section += self.entries_for(command, parser, actions)
        commands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        for action in commands:
            section += nodes.rubric(text="Commands")
            entries = nodes.definition_list()
            for choice in action._choices_actions:
                item = nodes.definition_list_item()
                term = nodes.term()
                name = f"{command} {choice.dest}"
                link = nodes.reference("", "", internal=True, refid=nodes.make_id(name))
                link += nodes.literal(name, name)
                term += link
                item += term
                definition = nodes.definition()
                text = nodes.paragraph(text=choice.help or "")
                text["support_smartquotes"] = False
                definition += text
                item += definition
                entries += item
            section += entries
        if parser.epilog:
            section += self.literal(parser.epilog.rstrip())
        return section

    def same_connection(self, parser: argparse.ArgumentParser) -> bool:
        return shared_group(self.parser, parser)

    def run(self) -> list[nodes.Node]:
        from geeh.cli import build_parser

        parser = self.parser = build_parser()
        every = anchors(parser)
        if len(set(every)) != len(every):
            twice = sorted({a for a in every if every.count(a) > 1})
            raise self.error(f"geeh-cli: anchors made twice: {', '.join(twice)}")
        top = self.section("geeh", parser, None)
        result: list[nodes.Node] = [top]
        for name, sub in subcommands(parser):
            result.append(self.section(f"geeh {name}", sub, top))
        return result


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("geeh-cli", GeehCli)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
