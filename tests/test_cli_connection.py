"""The `geeh` command's connection options: etcdctl's TLS and credential flags and variables.

Against real etcd servers: a TLS cluster with client certificates, and one with auth enabled.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import subprocess
from collections.abc import Iterator

import pytest
import test_cli
from conftest import ETCD_BINARIES
from support.kv import joined
from support.wait import within
from test_cli import GEEH, Spawn, clean_env, key_line, lease_of

import geeh
from geeh.cli import build_parser, main, parse
from geeh.cli.connection import Connection, connection_from
from geeh.net.auth import Authenticator
from geeh.testing import EtcdFactory, LocalEtcdCluster, find_etcdctl

spawn = test_cli.spawn  # the fixture that starts (and finally kills) child processes

PASSWORD = "pw-Kq7vXz3-not-in-logs"  # distinctive: searched for in every output
WRONG = "pw-Wr0ng9-not-in-logs"
# etcd's simple tokens: 16 random letters, a dot, a counter.
TOKEN = re.compile(r"\b[A-Za-z]{16}\.\d+\b")
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


@pytest.fixture
def tls_etcd(etcd_factory: EtcdFactory) -> LocalEtcdCluster:
    cluster: LocalEtcdCluster = etcd_factory(tls=True, client_cert_auth=True)
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


# -- credentials -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured() -> Iterator[LocalEtcdCluster]:
    """One etcd 3.5 member with auth enabled (user root, PASSWORD) and 1 s tokens."""
    cluster = LocalEtcdCluster(1, etcd_bin=ETCD_BINARIES["3.5"], extra_args=["--auth-token-ttl=1"])
    cluster.start()
    etcdctl = [find_etcdctl(), f"--endpoints={cluster.endpoints[0]}"]
    try:
        for args in (
            ["user", "add", "root", f"--new-user-password={PASSWORD}"],
            ["auth", "enable"],
        ):
            subprocess.run([*etcdctl, *args], check=True, capture_output=True, timeout=10)
        yield cluster
    finally:
        cluster.close()


def assert_no_secret(*outputs: str) -> None:
    for text in outputs:
        assert PASSWORD not in text and WRONG not in text, text
        assert not TOKEN.search(text), text


@pytest.fixture
def password_files(tmp_path: os.PathLike[str]) -> tuple[str, str]:
    """A file with the right password (and a newline), and one with a wrong one."""
    paths = (os.path.join(tmp_path, "right"), os.path.join(tmp_path, "wrong"))
    for path, secret in zip(paths, (PASSWORD + "\n", WRONG), strict=True):
        with open(path, "w") as fh:
            fh.write(secret)
    return paths


async def test_credentials_from_flags_files_and_variables(
    secured: LocalEtcdCluster, spawn: Spawn, password_files: tuple[str, str]
) -> None:
    right, wrong = password_files
    warned = "password on the command line can be read by other users"
    cases: list[tuple[list[str], dict[str, str], bool]] = [  # argv, variables, warned
        (["--user", f"root:{PASSWORD}"], {}, True),
        (["--user", "root", "--password", PASSWORD], {}, True),
        (["--user", "root", "--password-file", right], {}, False),
        (["--user", "root", "--password-file", right], {"GEEH_PASSWORD": WRONG}, False),
        (["--user", "root"], {"ETCDCTL_PASSWORD": PASSWORD}, False),
        ([], {"ETCDCTL_USER": f"root:{PASSWORD}"}, False),
        ([], {"ETCDCTL_USER": "root", "ETCDCTL_PASSWORD": PASSWORD}, False),
        ([], {"GEEH_USER": "root", "GEEH_PASSWORD": PASSWORD}, False),
        ([], {"GEEH_USER": "root", "GEEH_PASSWORD": PASSWORD, "ETCDCTL_PASSWORD": WRONG}, False),
        # a password at a higher level wins over NAME:PASSWORD at a lower one
        ([], {"ETCDCTL_USER": f"root:{WRONG}", "GEEH_PASSWORD": PASSWORD}, False),
    ]
    endpoints = ["--endpoints", secured.endpoints[0]]
    for argv, variables, warns in cases:
        status, out, err = await outcome(
            spawn, "put", "cli-auth", "v", *endpoints, *argv, environ=env(**variables)
        )
        assert (status, out) == (0, "OK\n"), (argv, variables, err)
        assert (warned in err) == warns, (argv, variables, err)
        assert_no_secret(err)
    status, out, err = await outcome(
        spawn, "put", "cli-auth", "v", *endpoints, "--user", "root", "--password-file", wrong
    )
    assert status != 0 and out == "" and err.count("\n") == 1, err
    assert_no_secret(err)


async def test_verbose_cli_never_logs_a_password_or_token(
    secured: LocalEtcdCluster, name: str, spawn: Spawn
) -> None:
    """-vv through a campaign that outlives its 1 s token, and a wrong password."""
    base = ["-vv", "--endpoints", secured.endpoints[0], "--user", "root"]
    right, wrong = env(GEEH_PASSWORD=PASSWORD), env(GEEH_PASSWORD=WRONG)
    elect = await spawn(*GEEH, *base, "elect", name, "v", "--ttl", "2", env=right)
    key = await elect.line("elected")
    # etcd drops the 1 s token while the keepalives run on; the observer's reads need a
    # fresh one: `geeh leader` shows the leadership held through the expiry.
    await asyncio.sleep(2.5)
    status, out, err = await outcome(spawn, *base, "leader", name, environ=right)
    assert status == 0 and out.startswith(key.decode()), err
    assert err.count("\n") > 1  # -vv logged
    assert await elect.interrupt() == 0
    failed, _, failed_err = await outcome(spawn, *base, "leader", name, environ=wrong)
    assert failed != 0
    assert_no_secret(err, failed_err, await elect.stderr(), elect.output.decode())


def test_password_is_asked_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def getpass(prompt: str) -> str:
        asked.append(prompt)
        return PASSWORD

    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("getpass.getpass", getpass)
    settings = resolve(["leader", "x", "--user", "root"])
    assert (settings.username, settings.password, asked) == (
        "root",
        PASSWORD,
        ["Password for root: "],
    )
    assert PASSWORD not in repr(settings)


def resolve(argv: list[str]) -> Connection:
    args: argparse.Namespace = parse(build_parser(), argv)
    return connection_from(args, lambda text: None)


def test_discover_is_opt_in() -> None:
    assert resolve(["leader", "x"]).discover is False
    assert resolve(["leader", "x", "--discover"]).discover is True
    assert resolve(["--discover", "leader", "x"]).discover is True
    assert resolve(["leader", "x", "--discover=false"]).discover is False


# -- no secret in a repr, an exception or a log record ---------------------------------------


async def test_no_password_or_token_in_reprs_errors_or_logs(
    secured: LocalEtcdCluster, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another test may have run the CLI in this process without -v, which mutes "geeh".
    monkeypatch.setattr(logging.getLogger("geeh"), "propagate", True)
    caplog.set_level(logging.DEBUG)
    tokens: set[str] = set()
    credentials = {"username": "root", "password": PASSWORD}
    async with geeh.Client(secured.endpoints, **credentials) as client:
        auth = client.core.transport.auth
        assert auth is not None and auth.token
        tokens.add(auth.token)
        election = client.election("secrets")
        leadership = await within(election.campaign(b"v", ttl=5), 5, "campaign")
        renewals = auth.renewals
        await asyncio.sleep(2.5)  # the token expires: nothing to poll (any check renews it)
        await within(leadership.proclaim(b"w"), 5, "proclaim after the token expired")
        assert auth.renewals == renewals + 1
        tokens.add(auth.token)
        texts = [repr(client), repr(auth), repr(client.core.transport), repr(leadership)]
        await leadership.resign()
    with pytest.raises(geeh.GeehError) as refused:
        async with geeh.Client(secured.endpoints, username="root", password=WRONG):
            pass
    key = b"-----BEGIN PRIVATE KEY-----\n" + PASSWORD.encode() + b"\n-----END PRIVATE KEY-----\n"
    with pytest.raises(geeh.InvalidArgument) as bad_key:
        geeh.TLS(cert=key, key=key).load()
    texts += [
        str(refused.value),
        repr(refused.value),
        str(bad_key.value),
        repr(geeh.TLS(cert=key, key=key)),
        repr(Authenticator("root", PASSWORD)),
        repr(resolve(["leader", "x", "--user", f"root:{PASSWORD}"])),
    ]
    texts += [r.getMessage() for r in caplog.records]
    texts += [repr(r.args) for r in caplog.records]
    assert len(tokens) == 2
    for text in texts:
        assert PASSWORD not in text and WRONG not in text, text
        assert not any(token in text for token in tokens), text
