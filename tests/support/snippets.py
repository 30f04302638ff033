"""Code blocks of Markdown pages, and the test markers written before them.

A marker is an HTML comment alone on a line before a fenced block (blank lines and other
markers may come between): ``<!-- test: NAME [ARGUMENT] -->``. See docs/README.md.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What a page writes for the etcd it talks to; the tests put their own etcd's endpoint there.
PLACEHOLDER = "127.0.0.1:2379"

PYTHON = {"python", "py", "python3"}
SHELL = {"sh", "shell", "bash", "console"}
MARKERS = {"output", "warns", "service", "interrupt", "skip"}

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_MARKER = re.compile(r"^\s*<!--\s*test:\s*(?P<name>[\w-]+)\s*:?\s*(?P<arg>.*?)\s*-->\s*$")


@dataclass
class Block:
    """One fenced code block: where it is, its language, its text and its markers."""

    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    markers: dict[str, str] = field(default_factory=dict)
    output: str | None = None  # for python blocks: the text block marked as their output

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def marker_text(self, name: str) -> str:
        """The marker's argument without quotes (``service "TEXT"`` -> TEXT)."""
        arg = self.markers[name]
        return shlex.split(arg)[0] if arg else ""


@dataclass
class Page:
    path: Path
    blocks: list[Block]
    problems: list[str]


def _language(info: str) -> str:
    info = info.strip()
    directive = re.match(r"\{(code-block|code|sourcecode)\}\s*(\S*)", info)
    if directive:
        return directive.group(2).lower()
    return info.split()[0].lower() if info else ""


def parse(path: Path, text: str | None = None) -> Page:
    """The fenced blocks of a Markdown file, with their markers; problems found on the way."""
    lines = (path.read_text() if text is None else text).splitlines()
    blocks: list[Block] = []
    problems: list[str] = []
    pending: dict[str, str] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = _MARKER.match(line)
        if marker:
            name = marker["name"]
            if name not in MARKERS:
                problems.append(f"{path.name}:{i + 1}: unknown marker {name!r}")
            pending[name] = marker["arg"]
            i += 1
            continue
        fence = _FENCE.match(line)
        if not fence:
            if line.strip() and pending:
                problems.append(f"{path.name}:{i + 1}: marker not followed by a code block")
                pending = {}
            i += 1
            continue
        start, closing = i, fence["fence"]
        body: list[str] = []
        i += 1
        while i < len(lines) and not (
            lines[i].strip().startswith(closing[0] * len(closing))
            and not lines[i].strip().strip(closing[0])
        ):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        block = Block(path, start + 1, _language(fence["info"]), "\n".join(body) + "\n", pending)
        pending = {}
        if "output" in block.markers and block.lang not in PYTHON:
            previous = next((b for b in reversed(blocks) if b.lang in PYTHON), None)
            if previous is None or previous.output is not None:
                problems.append(f"{path.name}:{start + 1}: output with no python block for it")
            else:
                previous.output = block.code
            continue
        if "output" in block.markers:
            problems.append(f"{path.name}:{start + 1}: output marker on a python block")
        blocks.append(block)
    if pending:
        problems.append(f"{path.name}: marker at the end of the file")
    return Page(path, blocks, problems)


def pages() -> list[Page]:
    """The README and every page of the documentation site."""
    paths = [ROOT / "README.md"]
    paths += sorted(p for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts)
    return [parse(p) for p in paths]


def geeh_commands(block: Block) -> list[list[str]]:
    """The ``geeh`` command lines of a shell block, as argument lists (comments dropped)."""
    commands = []
    for line in block.code.splitlines():
        text = line.strip().removeprefix("$ ")
        if text.startswith("geeh ") or text == "geeh":
            commands.append(shlex.split(text, comments=True))
    return commands
