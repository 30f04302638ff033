"""The `geeh` command's connection options: etcdctl's TLS and credential flags and variables.

Against real etcd servers, plaintext and TLS with client certificates; credentials are in
test_cli_credentials.py.
"""

from __future__ import annotations

import asyncio

import pytest
import test_cli
from support.kv import joined
from test_cli import GEEH, Spawn, clean_env, key_line, lease_of

import geeh
from geeh.cli import main
from geeh.testing import EtcdFactory, LocalEtcdCluster

spawn = test_cli.spawn  # the fixture that starts (and finally kills) child processes

CONNECTING = ["elect", "observe", "leader", "run", "put", "candidates", "status"]
VARIABLES = [
    f"{prefix}_{name}"
    for prefix in ("GEEH", "ETCDCTL")
    for name in (
        "ENDPOINTS",
        "CACERT",
        "CERT",
        "KEY",
        "USER",
        "PASSWORD",
        "INSECURE_TRANSPORT",
        "INSECURE_SKIP_TLS_VERIFY",
    )
] + ["GEEH_SERVER_NAME"]


def env(**extra: str) -> dict[str, str]:
    """The environment with none of the connection variables, plus ``extra``."""
    base = {k: v for k, v in clean_env().items() if k not in VARIABLES}
    base.update(extra)
    return base


@pytest.fixture(autouse=True)
def no_connection_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """For the in-process main(): the caller's shell must not set any of them."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


async def geeh_status(spawn: Spawn, *argv: str, environ: dict[str, str] | None = None) -> int:
    """Run ``geeh ARGV`` (a short command) to its end; its exit status."""
    proc = await spawn(*GEEH, *argv, env=environ if environ is not None else env())
    return await proc.wait(timeout=20)


async def outcome(
    spawn: Spawn, *argv: str, environ: dict[str, str] | None = None
) -> tuple[int, str, str]:
    proc = await spawn(*GEEH, *argv, env=environ if environ is not None else env())
    status = await proc.wait(timeout=20)
    return status, (await proc.rest()).decode(), await proc.stderr()


def tls_args(cluster: LocalEtcdCluster) -> list[str]:
    assert cluster.ca_path and cluster.client_cert_path and cluster.client_key_path
    return [
        "--cacert",
        cluster.ca_path,
        "--cert",
        cluster.client_cert_path,
        "--key",
        cluster.client_key_path,
    ]


def tls_env(cluster: LocalEtcdCluster, prefix: str) -> dict[str, str]:
    assert cluster.ca_path and cluster.client_cert_path and cluster.client_key_path
    return {
        f"{prefix}_CACERT": cluster.ca_path,
        f"{prefix}_CERT": cluster.client_cert_path,
        f"{prefix}_KEY": cluster.client_key_path,
    }


@pytest.fixture(scope="module")  # shared: no test faults it
def tls_etcd(module_etcd_factory: EtcdFactory) -> LocalEtcdCluster:
    cluster: LocalEtcdCluster = module_etcd_factory(tls=True, client_cert_auth=True)
    return cluster


# -- help ------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", CONNECTING)
def test_help_of_connecting_commands_lists_the_options_and_variables(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--cacert", "--cert", "--key", "--server-name", "--insecure-transport"):
        assert option in out
    for option in ("--insecure-skip-tls-verify", "--user", "--password-file", "--discover"):
        assert option in out
    for variable in ("ETCDCTL_CACERT", "GEEH_KEY", "ETCDCTL_USER", "GEEH_PASSWORD"):
        assert variable in out
    assert "--no-insecure-transport" not in out  # the hidden "=false" spelling


# -- usage errors: one line, exit 2, before any connection -----------------------------------


def bad_inputs(cluster: LocalEtcdCluster) -> list[tuple[list[str], dict[str, str], str]]:
    other = cluster.issue_client_cert("other")
    assert cluster.client_cert_path and cluster.ca_path
    return [
        (["--cacert", "/no/such/ca.pem"], {}, "'/no/such/ca.pem' does not exist (from --cacert)"),
        ([], {"ETCDCTL_CACERT": "/no/such/ca.pem"}, "from $ETCDCTL_CACERT"),
        (["--cert", cluster.client_cert_path], {}, "--cert needs its key too"),
        ([], {"GEEH_KEY": other.key_path}, "$GEEH_KEY needs its cert too"),
        (
            ["--cert", cluster.client_cert_path, "--key", other.key_path],
            {},
            "does not match the certificate",
        ),
        (["--cacert", cluster.client_cert_path + ".nope"], {}, "does not exist"),
        (["--insecure-transport", "--cacert", cluster.ca_path], {}, "conflicts with --cacert"),
        (["--insecure-transport=maybe"], {}, "--insecure-transport=maybe: expected true or"),
        ([], {"ETCDCTL_INSECURE_TRANSPORT": "maybe"}, "$ETCDCTL_INSECURE_TRANSPORT='maybe'"),
        (["--insecure-skip-tls-verify"], {}, "cannot skip verifying the server's certificate"),
        ([], {"ETCDCTL_INSECURE_SKIP_TLS_VERIFY": "true"}, "$ETCDCTL_INSECURE_SKIP_TLS_VERIFY:"),
        ([], {"GEEH_INSECURE_SKIP_TLS_VERIFY": "1"}, "cannot skip verifying"),
        (["--user", "root", "--password", "x", "--password-file", "f"], {}, "not both"),
        (["--password-file", "/no/such/file", "--user", "root"], {}, "No such file"),
        (["--password", "x"], {}, "--password needs a user name"),
        (["--user", ":x"], {}, "the user name is empty"),
        (["--user", "root"], {}, "no password for user 'root' (--user)"),
    ]


def test_bad_connection_settings_one_line_exit_2(
    tls_etcd: LocalEtcdCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    endpoints = ["--endpoints", ",".join(tls_etcd.endpoints)]
    for argv, variables, message in bad_inputs(tls_etcd):
        with monkeypatch.context() as m:
            for name, value in variables.items():
                m.setenv(name, value)
            assert main(["leader", "x", *endpoints, *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, variables, err)
        assert "Traceback" not in err


async def test_skip_verify_false_overrides_the_variable(
    tls_etcd: LocalEtcdCluster, name: str, spawn: Spawn
) -> None:
    variables = env(ETCDCTL_INSECURE_SKIP_TLS_VERIFY="true", **tls_env(tls_etcd, "ETCDCTL"))
    argv = ["leader", name, "--endpoints", ",".join(tls_etcd.endpoints)]
    assert await geeh_status(spawn, *argv, environ=variables) == 2
    assert (
        await geeh_status(spawn, *argv, "--insecure-skip-tls-verify=false", environ=variables) == 1
    )


# -- TLS: flags, variables, precedence -------------------------------------------------------


async def test_tls_flags_and_variables_reach_a_tls_cluster(
    tls_etcd: LocalEtcdCluster, name: str, spawn: Spawn
) -> None:
    """`geeh leader` exits 1 (no leader) once it got an answer over TLS, 2 or 4 if not."""
    bare = ",".join(tls_etcd.endpoints)
    https = ",".join(tls_etcd.urls)
    assert tls_etcd.ca_path
    cases: list[tuple[list[str], dict[str, str], int]] = [
        (["--endpoints", bare, *tls_args(tls_etcd)], {}, 1),  # bare host:port + TLS files
        (["--endpoints", https, *tls_args(tls_etcd)], {}, 1),
        ([], {"ETCDCTL_ENDPOINTS": bare, **tls_env(tls_etcd, "ETCDCTL")}, 1),  # etcdctl's shell
        ([], {"GEEH_ENDPOINTS": https, **tls_env(tls_etcd, "GEEH")}, 1),
        # etcdctl's "insecure transport" default does not turn TLS files off
        ([], {"ETCDCTL_INSECURE_TRANSPORT": "true", **tls_env(tls_etcd, "ETCDCTL")}, 1),
        # GEEH_ wins over ETCDCTL_, a flag over both
        ([], {**tls_env(tls_etcd, "GEEH"), "ETCDCTL_CACERT": "/no/such/ca.pem"}, 1),
        ([], {**tls_env(tls_etcd, "ETCDCTL"), "GEEH_CACERT": "/no/such/ca.pem"}, 2),
        (["--cacert", tls_etcd.ca_path], {**tls_env(tls_etcd, "GEEH"), "GEEH_CACERT": "/no"}, 1),
        # the server name is what the certificate is checked against
        (["--server-name", "localhost", *tls_args(tls_etcd)], {}, 1),
        (["--server-name", "elsewhere.example", *tls_args(tls_etcd)], {}, 4),
        # plaintext to a TLS port: no answer
        (["--insecure-transport"], tls_env(tls_etcd, "ETCDCTL"), 4),
    ]
    for argv, variables, status in cases:
        environ = env(**variables)
        environ.setdefault("GEEH_ENDPOINTS", bare)
        got, _, err = await outcome(
            spawn, "leader", name, "--dial-timeout", "2", *argv, environ=environ
        )
        assert got == status, (argv, variables, err)
        assert err.count("\n") <= 1 and "Traceback" not in err, err


async def test_insecure_transport_against_a_plaintext_etcd(
    etcd: LocalEtcdCluster, tls_etcd: LocalEtcdCluster, name: str, spawn: Spawn
) -> None:
    """--insecure-transport overrides TLS files named by the environment; =false means TLS."""
    plain = {"GEEH_ENDPOINTS": ",".join(etcd.endpoints)}
    argv = ["leader", name, "--dial-timeout", "1"]
    with_files = env(**plain, **tls_env(tls_etcd, "ETCDCTL"))
    assert await geeh_status(spawn, *argv, environ=with_files) == 4  # TLS to a plaintext port
    assert await geeh_status(spawn, *argv, "--insecure-transport", environ=with_files) == 1
    assert await geeh_status(spawn, *argv, "--insecure-transport=true", environ=with_files) == 1
    assert await geeh_status(spawn, *argv, environ=env(**plain)) == 1
    secure = env(**plain, ETCDCTL_INSECURE_TRANSPORT="false")
    assert await geeh_status(spawn, *argv, environ=secure) == 4
    assert await geeh_status(spawn, *argv, "--insecure-transport=false", environ=env(**plain)) == 4


async def test_each_bad_certificate_is_one_line_at_the_cli(
    tls_etcd: LocalEtcdCluster, etcd: LocalEtcdCluster, name: str, spawn: Spawn, tmp_path: str
) -> None:
    """Exit 4 and one line that says what to fix; no traceback, no gRPC log line."""
    other = geeh.testing.CertificateAuthority(str(tmp_path), "other")
    expired = tls_etcd.issue_client_cert("client", expired=True)
    assert tls_etcd.ca_path and tls_etcd.client_cert_path and tls_etcd.client_key_path
    pair = ["--cert", tls_etcd.client_cert_path, "--key", tls_etcd.client_key_path]
    secure = ",".join(tls_etcd.endpoints)
    cases = [
        (secure, ["--cacert", other.ca_path, *pair], "is not signed by the CA given"),
        (secure, ["--cacert", tls_etcd.ca_path], "requires a client certificate"),
        (
            secure,
            ["--cacert", tls_etcd.ca_path, "--cert", expired.cert_path, "--key", expired.key_path],
            "refused the client certificate: it has expired",
        ),
        (secure, [*tls_args(tls_etcd), "--server-name", "etcd.example"], "not valid for"),
        (secure, [], "serves TLS and this client speaks plaintext"),
        (",".join(etcd.endpoints), tls_args(tls_etcd), "does not serve TLS"),
    ]
    for endpoints, argv, expected in cases:
        status, _, err = await outcome(
            spawn, "leader", name, "--endpoints", endpoints, "--dial-timeout", "1", *argv
        )
        assert status == 4 and err.count("\n") == 1 and expected in err, (argv, err)
        assert err.startswith("geeh leader: cannot reach etcd"), err


# -- elect over TLS, handing off to and from etcdctl elect over TLS --------------------------


async def test_geeh_elect_and_etcdctl_elect_hand_off_both_ways_over_tls(
    tls_etcd: LocalEtcdCluster, name: str, spawn: Spawn
) -> None:
    etcdctl = [*tls_etcd.etcdctl_args(), "elect", name]
    options = ["--ttl", "5", "--endpoints", ",".join(tls_etcd.urls)]
    assert tls_etcd.ca_path
    tls = geeh.TLS(tls_etcd.ca_path, tls_etcd.client_cert_path, tls_etcd.client_key_path)
    async with geeh.Client(tls_etcd.urls, tls=tls) as client:
        ours = await spawn(*GEEH, "elect", name, "geeh-1", *options, *tls_args(tls_etcd))
        key, value = (await ours.lines(2, "geeh elected")).splitlines(keepends=True)
        assert key_line(name).fullmatch(key) and value == b"geeh-1\n"

        go = await spawn(*etcdctl, "go-value")
        await joined(client, name, 2)
        assert await ours.interrupt() == 0
        go_key, go_value = (await go.lines(2, "etcdctl elected")).splitlines(keepends=True)
        assert key_line(name).fullmatch(go_key) and go_value == b"go-value\n"

        # and back, with the TLS files from etcdctl's variables this time
        again = await spawn(
            *GEEH, "elect", name, "geeh-2", *options, env=env(**tls_env(tls_etcd, "ETCDCTL"))
        )
        await joined(client, name, 2)
        assert again.output == b""
        assert await go.interrupt() == 0
        key2 = await again.line("geeh elected after etcdctl resigned")
        assert key_line(name).fullmatch(key2) and key2 not in (key, go_key)
        assert await again.line("value") == b"geeh-2\n"
        assert await again.interrupt() == 0
        leader = await client.election(name).leader()
        assert leader is None
    revoked = (lease_of(key), lease_of(key2))
    listed = (await asyncio.to_thread(tls_etcd.etcdctl, "lease", "list")).stdout
    assert not any(lease in listed for lease in revoked)


async def test_run_passes_its_tls_settings_to_cmd(
    tls_etcd: LocalEtcdCluster, name: str, spawn: Spawn
) -> None:
    """`geeh put --fenced` inside `geeh run` reaches the TLS cluster as `geeh run` did."""
    fenced = [*GEEH, "put", "--fenced", f"{name}-out", "written"]
    argv = ["run", name, "--endpoints", ",".join(tls_etcd.urls), *tls_args(tls_etcd)]
    status, out, err = await outcome(spawn, *argv, "--", *fenced)
    assert (status, out) == (0, "OK\n"), err
    got = await asyncio.to_thread(tls_etcd.etcdctl, "get", "--print-value-only", f"{name}-out")
    assert got.stdout == "written\n"
