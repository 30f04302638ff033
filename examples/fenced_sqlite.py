"""Fencing a database that is not etcd: the leader's token goes into every write.

    python examples/fenced_sqlite.py [--endpoints HOST:PORT,...] DB ELECTION LABEL

Campaigns in ELECTION; while leader, writes "LABEL:n" to a one-row table in the SQLite file
DB, stamped with its fencing token (the leader key's create revision, which grows from one
leader to the next). The database accepts a write only if its token is at least the last
one it stored, so a deposed leader that wakes up late (a GC pause, SIGSTOP, a VM migration)
and writes before it notices its loss is refused by the database itself.

--pause-before-write makes the process stop itself (SIGSTOP) between its leadership check
and its first write: the pause that fencing exists for. Resume it with SIGCONT.
"""

import argparse
import asyncio
import os
import signal
import sqlite3

import geeh

SCHEMA = """
CREATE TABLE IF NOT EXISTS register (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    value TEXT,
    token INTEGER NOT NULL
)
"""


def fenced_write(db: sqlite3.Connection, token: int, value: str) -> bool:
    """Store ``value`` unless a leader with a newer token has written already."""
    with db:  # one transaction: the check and the write cannot be split
        db.execute("INSERT OR IGNORE INTO register (id, value, token) VALUES (1, NULL, 0)")
        cursor = db.execute(
            "UPDATE register SET value = ?, token = ? WHERE id = 1 AND token <= ?",
            (value, token, token),
        )
        return cursor.rowcount == 1


async def main(args: argparse.Namespace) -> None:
    db = sqlite3.connect(args.db)
    db.execute(SCHEMA)

    async def lead(leadership: geeh.Leadership) -> None:
        for n in range(1, args.writes + 1):
            if not leadership.is_leader:
                return
            if args.pause_before_write and n == 1:
                os.kill(os.getpid(), signal.SIGSTOP)  # stand-in for a long GC pause
            accepted = fenced_write(db, leadership.token, f"{args.label}:{n}")
            print("wrote" if accepted else "rejected", leadership.token, flush=True)
            if not accepted:
                return  # a newer leader exists: stop here
            await asyncio.sleep(args.interval)

    async with geeh.Client(args.endpoints) as client:
        await client.election(args.election).run(lead, args.label, ttl=args.ttl, again=False)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Write to SQLite only as leader, fenced.")
    parser.add_argument("--endpoints", default=os.environ.get("GEEH_ENDPOINTS", "127.0.0.1:2379"))
    parser.add_argument("--ttl", type=int, default=2, help="lease TTL in seconds (default: 2)")
    parser.add_argument("--writes", type=int, default=1, help="writes to make (default: 1)")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between writes")
    parser.add_argument("--pause-before-write", action="store_true")
    parser.add_argument("db", help="the SQLite database file")
    parser.add_argument("election", help="the election name")
    parser.add_argument("label", help="this candidate's label, written with each value")
    asyncio.run(main(parser.parse_args()))
