"""The import structure: no circles in the runtime package, and gRPC loaded only when needed.

The graph is read from the source (ast), so typing-only imports (``if TYPE_CHECKING:``) and
imports inside functions count as much as the others. Load checks run in a fresh
interpreter and count modules, never milliseconds.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import geeh

SRC = Path(geeh.__file__).parent
# Generated protobuf code: no gee-h imports beyond its own pool.
SKIP = ("geeh._proto",)
# Below the recipes: what these import must not know of elections (the layout's one-way flow).
LOWER = ("geeh.net", "geeh.core", "geeh.events", "geeh.tasks", "geeh.fork", "geeh.lessor")
RECIPES = (
    "geeh.election",
    "geeh.campaign",
    "geeh.shards",
    "geeh.transfer",
    "geeh.leadership",
    "geeh.leadership_block",
    "geeh.fencing",
    "geeh.own_key",
    "geeh.supervisor",
    "geeh.observe",
    "geeh.candidates",
    "geeh.client",
    "geeh.blocking",
    "geeh.blocking_observe",
    "geeh.listeners",
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in SRC.rglob("*.py")}


def _imported(module: str, node: ast.Import | ast.ImportFrom, is_package: bool) -> list[str]:
    """The gee-h modules (or packages) an import statement names."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            base = ".".join(package[: len(package) - node.level + 1])
            target = f"{base}.{node.module}" if node.module else base
        else:
            target = node.module or ""
        # `from . import x` names the module geeh.x; `from .x import y` the module geeh.x.
        names = [
            f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names
        ]
    found = []
    for name in names:
        while name and name not in MODULES:  # geeh.x.Y -> geeh.x
            name = name.rpartition(".")[0]
        if name:
            found.append(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """Every module of src/geeh -> the gee-h modules it imports anywhere in its source.

    An import of an enclosing package (``from .. import x`` naming geeh itself) is left out:
    Python imports a module's packages before the module anyway, and geeh's __init__
    imports its submodules lazily.
    """
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        if module.startswith(SKIP):
            continue
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for name in _imported(module, node, path.name == "__init__.py"):
                    if name != module and not module.startswith(f"{name}."):
                        deps.add(name)
        graph[module] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (a list of modules, first = last), or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            cycle = visit(dep)
            if cycle:
                return cycle
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start)
        if cycle:
            return cycle
    return None


def test_the_graph_reader_sees_typing_only_imports() -> None:
    graph = import_graph()
    assert "geeh.leadership" in graph["geeh.listeners"]  # `if TYPE_CHECKING:` only
    assert "geeh.session" in graph["geeh.cli.run"]  # inside functions only
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_runtime_package_has_no_import_circles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_network_layer_and_the_core_import_no_recipe() -> None:
    graph = import_graph()
    wrong = {
        (module, dep)
        for module, deps in graph.items()
        if module.startswith(LOWER)
        for dep in deps
        if dep.startswith(RECIPES)
    }
    assert not wrong, sorted(wrong)


def test_grpcs_settings_apply_whoever_loads_grpc_after_geeh(tmp_path: Path) -> None:
    """``import geeh`` no longer loads gRPC, so gee-h's gRPC settings (geeh._grpc_setup) are
    applied when it does load: by gee-h or by the user's own ``import grpc``. A stand-in
    ``grpc`` records the environment it was imported in."""
    (tmp_path / "grpc").mkdir()
    (tmp_path / "grpc" / "__init__.py").write_text(
        "import os\nseen = {k: v for k, v in os.environ.items() if k.startswith('GRPC_')}\n"
    )
    code = (
        "import os, sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "import geeh\n"
        "assert 'grpc' not in sys.modules\n"
        "import grpc\n"
        "print(sorted(grpc.seen.items()))\n"
        "print(sorted(k for k in os.environ if k.startswith('GRPC_')))\n"
        "print(type(grpc.__loader__).__name__, sys.meta_path[0].__class__.__name__)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout.splitlines()
    assert out[0] == str([("GRPC_ENABLE_FORK_SUPPORT", "false"), ("GRPC_VERBOSITY", "ERROR")])
    assert out[1] == "[]"  # removed again: processes started later see the user's environment
    assert out[2].split()[0] == "SourceFileLoader"  # its own loader, as if never wrapped
    assert out[2].split()[1] != "_OnGrpcImport"  # the hook removed itself

    env["GRPC_VERBOSITY"] = "DEBUG"  # the user's own choice wins
    seen = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout.splitlines()[0]
    assert seen == str([("GRPC_ENABLE_FORK_SUPPORT", "false"), ("GRPC_VERBOSITY", "DEBUG")])


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"import sys\n{code}\nprint('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def _loads_grpc(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in ("grpc", "google"))


def test_import_geeh_loads_neither_grpc_nor_protobuf() -> None:
    assert _loads_grpc(_modules_after("import geeh")) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        *(
            [command, "--help"]
            for command in (
                "demo",
                "elect",
                "observe",
                "leader",
                "run",
                "put",
                "shards",
                "transfer",
                "candidates",
                "status",
                "etcd",
            )
        ),
    ],
    ids=" ".join,
)
def test_cli_help_does_not_load_grpc(argv: list[str]) -> None:
    code = (
        "import contextlib, io\n"
        "from geeh.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        f"    status = main({argv!r})\n"
        "assert status == 0 and out.getvalue().startswith(('usage: geeh', 'geeh ')), status\n"
    )
    assert _loads_grpc(_modules_after(code)) == []


def test_loading_the_pytest_plugin_does_not_load_grpc() -> None:
    assert _loads_grpc(_modules_after("import pytest, geeh.testing.plugin")) == []


def test_a_command_that_runs_loads_grpc_with_geehs_settings() -> None:
    # The other half: the lazy imports still happen, settings first.
    loaded = _modules_after("import geeh\ngeeh.Client")
    assert {"grpc", "geeh._grpc_setup", "geeh.fork"} <= loaded


def test_the_public_names_all_resolve() -> None:
    for name in geeh.__all__:
        assert getattr(geeh, name) is not None, name
    assert set(geeh.__all__) <= set(dir(geeh))
    assert geeh.kv.__name__ == "geeh.kv"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = geeh.nothing  # type: ignore[attr-defined]
