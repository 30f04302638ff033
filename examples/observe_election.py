"""Print each leader of an election: gee-h's examples/observe_election.cpp, in Python.

    python examples/observe_election.py [--endpoints HOST:PORT,...] ELECTION

Prints the current leader, then every change, until Ctrl-C or SIGTERM. Uses gee-h's
blocking API: the callback gets (key, value), and an empty key means "no leader".
"""

import argparse
import os
import signal
import sys
import threading
import time

import geeh


def on_change(key: str, value: str) -> None:
    if not key:
        print("no current leader", flush=True)
        return
    print(f"current leader is {key}, with value={value}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="Print each leader of an election.")
    parser.add_argument(
        "--endpoints",
        default=os.environ.get("GEEH_ENDPOINTS", "127.0.0.1:2379"),
        help="etcd endpoints, comma-separated (default: $GEEH_ENDPOINTS or 127.0.0.1:2379)",
    )
    parser.add_argument("election", help="the election name")
    args = parser.parse_args()

    interrupted = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: interrupted.set())

    try:
        with geeh.ActiveCompletionQueue() as queue:
            observer = geeh.watch_election(queue, args.endpoints, args.election)
            subscription = observer.subscribe(on_change)

            # ... block here until a signal is received ...
            while not interrupted.is_set():
                time.sleep(0.02)

            subscription.unsubscribe()
            observer.close()
            return 0
    except geeh.GeehError as err:
        print(f"observe_election: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
