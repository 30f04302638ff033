"""Every code sample in the README and the docs runs, against a real etcd: a page that lies fails.

Each ``python`` block runs in a process of its own with ``127.0.0.1:2379`` replaced by the test
etcd's endpoint; it must exit 0, print what its output block says, write nothing on stderr
(unless marked ``warns``) and leave no key behind. ``geeh`` commands in shell blocks are run
(``--help``, ``--version``, ``leader``) or parsed by the command's own parser. Markers:
docs/README.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import doctest
import importlib
import inspect
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from support.snippets import PLACEHOLDER, PYTHON, ROOT, SHELL, Block, geeh_commands, pages, parse
from support.wait import eventually

import geeh
import geeh.blocking
from geeh._proto import rpc_pb2
from geeh.cli import build_parser
from geeh.cli import parse as parse_command
from geeh.net.retry import RANGE

PAGES = pages()
BLOCKS = [b for page in PAGES for b in page.blocks]
SNIPPETS = [b for b in BLOCKS if b.lang in PYTHON and "skip" not in b.markers]
COMMANDS = [
    (b, argv)
    for b in BLOCKS
    if b.lang in SHELL and "skip" not in b.markers
    for argv in geeh_commands(b)
]
RUN = 60.0  # seconds a snippet may take; they take one or two
START = 15.0  # a Python process with grpc takes about 0.5 s to start; the machine may be busy


def snippet_id(block: Block) -> str:
    return block.where


class Snippet:
    """A code block running in a child process; stdout read line by line, bounded."""

    def __init__(self, process: asyncio.subprocess.Process, block: Block) -> None:
        self.process = process
        self.block = block
        self.lines: list[str] = []

    async def until(self, text: str) -> None:
        """Read stdout until a line containing ``text``; fail if it exits or takes too long."""
        assert self.process.stdout is not None
        while not any(text in line for line in self.lines):
            try:
                raw = await asyncio.wait_for(self.process.stdout.readline(), START)
            except TimeoutError:
                pytest.fail(f"{self.block.where}: no {text!r} within {START}s: {self.lines}")
            if not raw:
                pytest.fail(f"{self.block.where} exited before {text!r}: {await self.stderr()}")
            self.lines.append(raw.decode())

    async def finish(self, timeout: float = RUN) -> tuple[int, str, str]:
        """Wait for the exit; (status, the rest of stdout, stderr)."""
        try:
            out, err = await asyncio.wait_for(self.process.communicate(), timeout)
        except TimeoutError:
            pytest.fail(f"{self.block.where} did not finish within {timeout}s")
        assert self.process.returncode is not None
        return self.process.returncode, "".join(self.lines) + out.decode(), err.decode()

    async def stderr(self) -> str:
        assert self.process.stderr is not None
        return (await asyncio.wait_for(self.process.stderr.read(), 5)).decode()

    async def interrupt(self) -> tuple[int, str, str]:
        self.process.send_signal(signal.SIGINT)
        return await self.finish(timeout=START)


Start = Callable[[Block], Coroutine[Any, Any, Snippet]]
Since = Callable[[], Coroutine[Any, Any, list[bytes]]]


def environment(etcd: Any) -> dict[str, str]:
    """Where a reader would run the docs: `geeh` on PATH, GEEH_ENDPOINTS set."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["GEEH_ENDPOINTS"] = ",".join(etcd.endpoints)
    env.pop("GEEH_DEBUG", None)
    return env


@pytest.fixture
async def start(etcd: Any, tmp_path: Path) -> AsyncIterator[Start]:
    """Start code blocks as scripts; any still running at the end of the test is killed."""
    started: list[Snippet] = []

    async def run(block: Block) -> Snippet:
        script = tmp_path / f"{block.path.stem}_{block.line}_{len(started)}.py"
        script.write_text(block.code.replace(PLACEHOLDER, etcd.endpoints[0]))
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=environment(etcd),
            cwd=tmp_path,
        )
        started.append(Snippet(process, block))
        return started[-1]

    yield run
    for snippet in started:
        if snippet.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                snippet.process.kill()
            await snippet.process.wait()


@pytest.fixture
async def since(
    etcd: Any,
) -> AsyncIterator[Callable[[], Coroutine[Any, Any, list[bytes]]]]:
    """Keys created since the test began; none may be left at its end."""
    async with geeh.Client(etcd.endpoints) as client:
        first = (await client.core.transport.call(RANGE, all_keys(count_only=True))).header.revision

        async def created() -> list[bytes]:
            response = await client.core.transport.call(RANGE, all_keys(min_create=first + 1))
            return [kv.key for kv in response.kvs]

        yield created


def all_keys(*, count_only: bool = False, min_create: int = 0) -> rpc_pb2.RangeRequest:
    return rpc_pb2.RangeRequest(
        key=b"\x00",
        range_end=b"\x00",
        keys_only=True,
        count_only=count_only,
        min_create_revision=min_create,
    )


def check_output(block: Block, stdout: str) -> None:
    if block.output is None:
        return
    checker = doctest.OutputChecker()
    if not checker.check_output(block.output, stdout, doctest.ELLIPSIS):
        pytest.fail(f"{block.where} printed:\n{stdout}\nThe page says:\n{block.output}")


# -- the pages themselves ---------------------------------------------------------------------


def test_markers_are_well_formed() -> None:
    assert [problem for page in PAGES for problem in page.problems] == []


def test_the_tutorial_and_the_readme_have_samples_that_run() -> None:
    """Guards the collection itself: a parser that finds nothing would pass everything."""
    where = {b.path.relative_to(ROOT).as_posix() for b in SNIPPETS}
    assert {"README.md", "docs/tutorial.md", "docs/concepts/leases.md"} <= where
    assert any(b.output is not None for b in SNIPPETS)
    assert any(argv[1:] == ["--help"] for _, argv in COMMANDS)


def test_the_tutorial_teaches_the_readmes_idiom_first() -> None:
    """One idiom first, the same in both: the first asyncio sample runs Election.run."""

    def first_asyncio(path: str) -> Block:
        return next(b for b in SNIPPETS if b.path == ROOT / path and "asyncio.run(" in b.code)

    for path in ("README.md", "docs/tutorial.md"):
        code = first_asyncio(path).code
        assert "election.run(work" in code and ".campaign(" not in code, path


def test_markers_and_output_blocks_are_read_as_documented() -> None:
    text = """
<!-- test: output -->
```python
print("not the output block itself")
```

<!-- test: output -->
```text
hello
```

<!-- test: service "working" -->

```python
pass
```
<!-- test: nonsense -->
Some prose.
"""
    page = parse(ROOT / "docs" / "example.md", text)
    assert page.problems == [
        "example.md:3: output marker on a python block",
        "example.md:17: unknown marker 'nonsense'",
        "example.md:18: marker not followed by a code block",
    ]
    first, service = page.blocks
    assert (first.line, first.output) == (3, "hello\n")
    assert (service.line, service.marker_text("service")) == (14, "working")


# -- python blocks ----------------------------------------------------------------------------


@pytest.mark.parametrize("block", SNIPPETS, ids=snippet_id)
async def test_python_block(block: Block, start: Start, since: Since) -> None:
    if "service" in block.markers:
        await service(block, start, since)
    elif "interrupt" in block.markers:
        snippet = await start(block)
        await snippet.until(block.marker_text("interrupt"))
        status, out, err = await snippet.interrupt()
        assert status == 0, f"{block.where} exited {status} on SIGINT: {err}"
    else:
        status, out, err = await (await start(block)).finish()
        assert status == 0, f"{block.where} exited {status}:\n{err}"
        check_output(block, out)
        if "warns" not in block.markers:
            assert err == "", f"{block.where} wrote on stderr:\n{err}"
    assert await since() == [], f"{block.where} left keys behind"


async def service(block: Block, start: Start, since: Since) -> None:
    """Two replicas of a service: the first leads, stops on SIGINT and hands over."""
    text = block.marker_text("service")
    first = await start(block)
    await first.until(text)
    second = await start(block)

    async def queued() -> bool:
        return len(await since()) == 2

    await eventually(queued, what=f"{block.where}: the second replica to join the queue")
    status, _, err = await first.interrupt()
    assert (status, err) == (0, ""), f"{block.where}: first replica on SIGINT"
    await second.until(text)
    status, _, err = await second.interrupt()
    assert (status, err) == (0, ""), f"{block.where}: second replica on SIGINT"


# -- geeh commands in shell blocks ------------------------------------------------------------

RUNNABLE = {"--help", "-h", "--version"}


@pytest.mark.parametrize(
    ("block", "argv"), COMMANDS, ids=[f"{b.where}:{' '.join(a)}" for b, a in COMMANDS]
)
async def test_geeh_command(block: Block, argv: list[str], etcd: Any) -> None:
    argv = [arg.replace(PLACEHOLDER, etcd.endpoints[0]) for arg in argv]
    try:
        parse_command(build_parser(), argv[1:])
    except SystemExit as exit_:
        if exit_.code != 0 or not RUNNABLE & set(argv):
            pytest.fail(f"{block.where}: `{' '.join(argv)}` is not a valid command line")
    if not (RUNNABLE & set(argv) or argv[1:2] == ["leader"]):
        return  # long-running (elect, observe, run, etcd, demo): parsing is the check
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "geeh.cli",
        *argv[1:],
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment(etcd),
    )
    out, err = await asyncio.wait_for(process.communicate(), START)
    allowed = {0, 1} if argv[1:2] == ["leader"] else {0}  # 1: no leader
    assert process.returncode in allowed, f"{block.where}: {err.decode()}"
    assert "Traceback" not in err.decode()
    assert out or err


# -- the API reference's hand-written attributes ------------------------------------------------


def test_attributes_on_the_api_page_exist() -> None:
    """Attributes set in ``__init__`` have no docstring to generate from: the page names them
    by hand, so check each against the class it is listed under."""
    documented, missing = 0, []
    cls: Any = None
    for line in (ROOT / "docs" / "reference" / "api.md").read_text().splitlines():
        if heading := re.match(r"\.\. autoclass:: (geeh(?:\.\w+)*)\.(\w+)", line):
            cls = getattr(importlib.import_module(heading[1]), heading[2])
        elif attribute := re.match(r"\s+\.\. attribute:: (\w+)", line):
            name = attribute[1]
            documented += 1
            fields = getattr(cls, "__dataclass_fields__", {})
            assigned = re.search(rf"\bself\.{name}\s*(:[^=\n]*)?=", inspect.getsource(cls))
            if name not in fields and not assigned:
                missing.append(f"{cls.__name__}.{name}")
    assert documented >= 10
    assert missing == []


def test_every_export_is_on_the_api_page() -> None:
    page = (ROOT / "docs" / "reference" / "api.md").read_text()
    listed = set(
        re.findall(r"^\.\. auto(?:class|function|exception|module):: geeh\.(\w+)", page, re.M)
    )
    assert set(geeh.__all__) - {"__version__"} - listed == set()


def test_the_cli_reference_has_an_anchor_per_command_and_option() -> None:
    """docs/reference/cli.md is rendered with a link target for each command and each of its
    arguments (geeh-elect, geeh-elect-ttl), made once each."""
    sys.path.insert(0, str(ROOT / "docs" / "_ext"))
    try:
        geeh_cli = importlib.import_module("geeh_cli")
    finally:
        sys.path.remove(str(ROOT / "docs" / "_ext"))
    parser = build_parser()
    every = geeh_cli.anchors(parser)
    assert len(every) == len(set(every))
    expected = {"geeh", "geeh-endpoints", "geeh-elect", "geeh-elect-ttl", "geeh-elect-name"}
    expected |= {"geeh-run-value", "geeh-run-grace", "geeh-candidates-watch", "geeh-put-fenced"}
    assert expected <= set(every)
    for name, sub in geeh_cli.subcommands(parser):
        for title, actions in geeh_cli.groups(sub):
            if title != geeh_cli.SHARED_GROUP:
                for action in actions:
                    assert geeh_cli.anchor_name(f"geeh {name}", action) in every
