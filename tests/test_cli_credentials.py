"""The `geeh` command's credentials against an etcd with auth enabled: etcdctl's --user,
--password and their variables, --password-file, the warning, and no secret in any output."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import subprocess
from collections.abc import Iterator

import pytest
import test_cli_connection
from conftest import ETCD_BINARIES
from support.wait import within
from test_cli import GEEH, Spawn
from test_cli_connection import env, outcome

import geeh
from geeh.cli import build_parser, parse
from geeh.cli.connection import Connection, connection_from
from geeh.net.auth import Authenticator
from geeh.testing import LocalEtcdCluster, find_etcdctl

spawn = test_cli_connection.spawn  # the fixture that starts (and finally kills) children
no_connection_variables = test_cli_connection.no_connection_variables  # autouse

PASSWORD = "pw-Kq7vXz3-not-in-logs"  # distinctive: searched for in every output
WRONG = "pw-Wr0ng9-not-in-logs"
# etcd's simple tokens: 16 random letters, a dot, a counter.
TOKEN = re.compile(r"\b[A-Za-z]{16}\.\d+\b")


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
