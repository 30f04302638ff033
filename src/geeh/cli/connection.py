"""How every ``geeh`` command that talks to etcd connects: endpoints, TLS, credentials.

Named as etcdctl names them, read from flags, then ``GEEH_*``, then ``ETCDCTL_*`` variables,
so a shell set up for etcdctl works for geeh unchanged. Everything is resolved (and the
password asked for, if need be) before the command's event loop starts; what is wrong is an
InvalidArgument naming the flag or variable it came from.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument
from ..net.endpoints import parse_endpoints

if TYPE_CHECKING:  # gRPC is loaded when a command runs, not for --help
    from ..net.tls import TLS

DEFAULT_ENDPOINTS = "127.0.0.1:2379"
ENDPOINTS_ENV = "GEEH_ENDPOINTS"
FALLBACK_ENDPOINTS_ENV = "ETCDCTL_ENDPOINTS"
DEFAULT_DIAL_TIMEOUT = 5.0

# Flags that take etcdctl's "--flag" / "--flag=BOOL" forms (see rewrite_bool_flags).
BOOL_FLAGS = ("insecure-transport", "insecure-skip-tls-verify", "discover")
TRUE = ("1", "t", "true", "y", "yes", "on")  # etcdctl (Go's ParseBool) takes 1, t, true
FALSE = ("0", "f", "false", "n", "no", "off")

SKIP_VERIFY_REFUSED = (
    "gRPC for Python cannot skip verifying the server's certificate: give the CA that "
    "signed it with --cacert (and --server-name if the address is not on the certificate)"
)
PASSWORD_ON_COMMAND_LINE = (
    "warning: a password on the command line can be read by other users (ps); "
    "use --password-file or $GEEH_PASSWORD"
)

CONNECTION_ENV_EPILOG = """\
environment (a flag wins over GEEH_*, GEEH_* over ETCDCTL_*; empty means unset):
  GEEH_ENDPOINTS, ETCDCTL_ENDPOINTS   --endpoints (without either: 127.0.0.1:2379)
  GEEH_CACERT, ETCDCTL_CACERT         --cacert
  GEEH_CERT, ETCDCTL_CERT             --cert
  GEEH_KEY, ETCDCTL_KEY               --key
  GEEH_SERVER_NAME                    --server-name
  GEEH_INSECURE_TRANSPORT,            true: plaintext unless TLS files are given (as
    ETCDCTL_INSECURE_TRANSPORT          etcdctl); false: TLS even without them
  GEEH_INSECURE_SKIP_TLS_VERIFY,      true is refused, as --insecure-skip-tls-verify is
    ETCDCTL_INSECURE_SKIP_TLS_VERIFY
  GEEH_USER, ETCDCTL_USER             --user: NAME or NAME:PASSWORD
  GEEH_PASSWORD, ETCDCTL_PASSWORD     --password
  GEEH_ETCD_BIN                       etcd server binary for `geeh etcd` and `geeh demo`
"""


def positive_float(text: str) -> float:
    """An argparse type: a number above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def add_connection_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    """The connection options, accepted before or after the command name.

    On sub-commands the defaults are suppressed, so a value given before the command name is
    not overwritten by the sub-command's default; sub-commands that take them connect.
    """
    default: Any = None if top_level else argparse.SUPPRESS
    if not top_level:
        parser.set_defaults(connects=True)
    group = parser.add_argument_group("connection")
    add = group.add_argument
    add(
        "--endpoints",
        metavar="A,B,C",
        default=default,
        help=f"etcd endpoints, host:port or https://host:port, separated by commas "
        f"(default: ${ENDPOINTS_ENV}, ${FALLBACK_ENDPOINTS_ENV}, or {DEFAULT_ENDPOINTS})",
    )
    add(
        "--dial-timeout",
        metavar="S",
        type=positive_float,
        default=DEFAULT_DIAL_TIMEOUT if top_level else argparse.SUPPRESS,
        help=f"give up if etcd does not answer within S seconds (default: "
        f"{DEFAULT_DIAL_TIMEOUT:g})",
    )
    add(
        "--discover",
        action="store_const",
        const=True,
        default=default,
        help="also talk to the other members etcd advertises (off: only to --endpoints, "
        "which may be all that is reachable through a port-forward or load balancer)",
    )
    add(
        "--cacert",
        dest="tls_cacert",
        metavar="FILE",
        default=default,
        help="verify the members' certificates with this CA bundle (speaks TLS)",
    )
    add(
        "--cert",
        dest="tls_cert",
        metavar="FILE",
        default=default,
        help="client certificate (speaks TLS)",
    )
    add("--key", dest="tls_key", metavar="FILE", default=default, help="private key of --cert")
    add(
        "--server-name",
        dest="tls_server_name",
        metavar="NAME",
        default=default,
        help="verify the members' certificates for NAME instead of the endpoint's host "
        "(speaks TLS)",
    )
    add(
        "--insecure-transport",
        action="store_const",
        const=True,
        default=default,
        help="plaintext, whatever TLS files the environment names (=false: TLS even "
        "without --cacert, trusting the system's CAs)",
    )
    add(
        "--insecure-skip-tls-verify",
        action="store_const",
        const=True,
        default=default,
        help="refused: gRPC for Python always verifies the server's certificate",
    )
    add(
        "--user",
        dest="auth_user",
        metavar="NAME[:PASSWORD]",
        default=default,
        help="etcd user name, and password (better: --password-file or $GEEH_PASSWORD; "
        "asked for on a terminal if given nowhere)",
    )
    add(
        "--password",
        dest="auth_password",
        metavar="PASSWORD",
        default=default,
        help="password of --user",
    )
    add(
        "--password-file",
        dest="auth_password_file",
        metavar="FILE",
        default=default,
        help="read the password of --user from FILE (its first line)",
    )
    # The "=false" forms of the boolean flags (see rewrite_bool_flags), not shown in --help.
    for flag in BOOL_FLAGS:
        group.add_argument(
            f"--no-{flag}",
            dest=flag.replace("-", "_"),
            action="store_const",
            const=False,
            default=default,
            help=argparse.SUPPRESS,
        )
    add(
        "-v",
        "--verbose",
        action="count",
        default=0 if top_level else argparse.SUPPRESS,
        help="log what the client does on stderr (-vv: debug)",
    )


def rewrite_bool_flags(argv: Sequence[str]) -> list[str]:
    """etcdctl's ``--insecure-transport=false`` as ``--no-insecure-transport`` (argparse
    cannot take an optional value without also swallowing a following command name)."""
    result: list[str] = []
    for index, arg in enumerate(argv):
        if arg == "--":
            return result + list(argv[index:])
        flag, sep, value = arg.partition("=")
        if sep and flag[2:] in BOOL_FLAGS and flag.startswith("--"):
            word = value.strip().lower()
            if word in TRUE:
                arg = flag
            elif word in FALSE:
                arg = f"--no-{flag[2:]}"
            else:
                raise InvalidArgument(f"{flag}={value}: expected true or false")
        result.append(arg)
    return result


def endpoints_from(args: argparse.Namespace) -> str:
    """--endpoints, else $GEEH_ENDPOINTS, else $ETCDCTL_ENDPOINTS, else 127.0.0.1:2379."""
    given: str | None = getattr(args, "endpoints", None)
    for candidate in (
        given,
        os.environ.get(ENDPOINTS_ENV),
        os.environ.get(FALLBACK_ENDPOINTS_ENV),
    ):
        if candidate and candidate.strip():
            return candidate.strip()
    return DEFAULT_ENDPOINTS


@dataclass(frozen=True)
class Setting:
    """A value and where it came from (``--cacert``, ``$ETCDCTL_CACERT``), for messages."""

    value: str
    source: str
    level: int  # 0: a flag, 1: GEEH_*, 2: ETCDCTL_*


def setting(args: argparse.Namespace, flag: str, dest: str, *env: str) -> Setting | None:
    """The flag's value (at ``args.dest``) if given, else the first non-empty variable of
    ``env``. Options have dests of their own: `geeh put` has a KEY of its own."""
    given = getattr(args, dest, None) if dest else None
    if given is not None:
        return Setting(given, f"--{flag}", 0)
    for name in env:
        value = os.environ.get(name, "")
        if value != "":
            return Setting(value, f"${name}", 1 if name.startswith("GEEH_") else 2)
    return None


def bool_setting(args: argparse.Namespace, flag: str) -> Setting | None:
    """A boolean flag (True, False or None) or its GEEH_/ETCDCTL_ variable, as "true"/"false"."""
    given = getattr(args, flag.replace("-", "_"), None)
    if given is not None:
        return Setting("true" if given else "false", f"--{flag}", 0)
    variable = flag.upper().replace("-", "_")
    found = setting(args, "", "", f"GEEH_{variable}", f"ETCDCTL_{variable}")
    if found is None:
        return None
    word = found.value.strip().lower()
    if word not in TRUE + FALSE:
        raise InvalidArgument(f"{found.source}={found.value!r}: expected true or false")
    return Setting("true" if word in TRUE else "false", found.source, found.level)


@dataclass(frozen=True)
class Connection:
    """What a command's Client is made with."""

    endpoints: str
    tls: TLS | None
    username: str | None
    password: str | None = field(repr=False)
    discover: bool


def connection_from(args: argparse.Namespace, warn: Any) -> Connection:
    """Resolve the connection settings; ``warn(text)`` reports a password on the command line.

    Raises InvalidArgument, naming the flag or variable at fault.
    """
    skip = bool_setting(args, "insecure-skip-tls-verify")
    if skip is not None and skip.value == "true":
        raise InvalidArgument(f"{skip.source}: {SKIP_VERIFY_REFUSED}")
    endpoints = endpoints_from(args)
    username, password = credentials(args, warn)
    discover = getattr(args, "discover", None) is True
    return Connection(endpoints, tls_from(args, endpoints), username, password, discover)


def tls_from(args: argparse.Namespace, endpoints: str) -> TLS | None:
    """TLS settings, as etcdctl decides: any TLS file (or a server name) means TLS;
    --insecure-transport on the command line means plaintext, and conflicts with TLS asked
    for on the command line too; --insecure-transport=false means TLS without files."""
    from ..net.tls import TLS

    files = {
        "ca": setting(args, "cacert", "tls_cacert", "GEEH_CACERT", "ETCDCTL_CACERT"),
        "cert": setting(args, "cert", "tls_cert", "GEEH_CERT", "ETCDCTL_CERT"),
        "key": setting(args, "key", "tls_key", "GEEH_KEY", "ETCDCTL_KEY"),
        "server_name": setting(args, "server-name", "tls_server_name", "GEEH_SERVER_NAME"),
    }
    insecure = bool_setting(args, "insecure-transport")
    given = {k: v for k, v in files.items() if v is not None}
    https = parse_endpoints(endpoints).secure is True
    if insecure is not None and insecure.value == "true" and insecure.level == 0:
        on_command_line = [v.source for v in given.values() if v.level == 0]
        if https:
            on_command_line.append("https:// endpoints")
        if on_command_line:
            raise InvalidArgument(
                f"--insecure-transport conflicts with {' and '.join(on_command_line)}"
            )
        return None  # the flag wins over TLS files named by the environment
    if not given:
        return TLS() if https or (insecure is not None and insecure.value == "false") else None
    cert, key = given.get("cert"), given.get("key")
    if (cert is None) != (key is None):
        present = cert or key
        missing = "KEY" if key is None else "CERT"
        assert present is not None
        raise InvalidArgument(
            f"{present.source} needs its {missing.lower()} too "
            f"(--{missing.lower()}, $GEEH_{missing} or $ETCDCTL_{missing})"
        )
    tls = TLS(**{k: v.value for k, v in given.items()})
    try:
        tls.load()  # now, to name the flag or variable a bad file came from
    except InvalidArgument as err:
        sources = ", ".join(v.source for k, v in given.items() if k != "server_name")
        raise InvalidArgument(f"{err} (from {sources})") from None
    return tls


def credentials(args: argparse.Namespace, warn: Any) -> tuple[str | None, str | None]:
    """User name and password from --user, --password, --password-file and the variables.

    As in etcdctl, a password given next to the user name (at the same level: flags, GEEH_*
    or ETCDCTL_*) makes the whole user value the name; otherwise NAME:PASSWORD is split at
    the first colon. The password of the highest level wins.
    """
    user = setting(args, "user", "auth_user", "GEEH_USER", "ETCDCTL_USER")
    password = password_setting(args)
    if user is None:
        if password is not None:
            raise InvalidArgument(f"{password.source} needs a user name (--user or $GEEH_USER)")
        return None, None
    name, colon, inline = user.value.partition(":")
    if password is not None and password.level == user.level:
        name = user.value
    elif colon and (password is None or user.level < password.level):
        password = Setting(inline, user.source, user.level)
    if not name:
        raise InvalidArgument(f"{user.source}: the user name is empty")
    if password is not None and password.source in ("--user", "--password"):
        warn(PASSWORD_ON_COMMAND_LINE)
    if password is None:
        return name, ask_password(name, user.source)
    return name, password.value


def password_setting(args: argparse.Namespace) -> Setting | None:
    given = getattr(args, "auth_password", None)
    path = getattr(args, "auth_password_file", None)
    if given is not None and path is not None:
        raise InvalidArgument("give --password or --password-file, not both")
    if path is not None:
        return Setting(read_password_file(path), "--password-file", 0)
    return setting(args, "password", "auth_password", "GEEH_PASSWORD", "ETCDCTL_PASSWORD")


def read_password_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            line = fh.readline().rstrip("\r\n")
    except OSError as err:
        raise InvalidArgument(f"--password-file {path!r}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise InvalidArgument(f"--password-file {path!r} is not UTF-8 text") from None
    if not line:
        raise InvalidArgument(f"--password-file {path!r}: its first line is empty")
    return line


def ask_password(name: str, source: str) -> str:
    """Ask on the terminal, as etcdctl does; refuse when there is no terminal to ask on."""
    if not sys.stdin.isatty():
        raise InvalidArgument(
            f"no password for user {name!r} ({source}): give --password-file, "
            "$GEEH_PASSWORD or NAME:PASSWORD (stdin is not a terminal to ask on)"
        )
    try:
        return getpass.getpass(f"Password for {name}: ")
    except EOFError:
        raise InvalidArgument(f"no password for user {name!r}: none typed") from None
