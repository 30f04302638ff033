"""Join an election and lead until interrupted: gee-h's examples/join_election.cpp, in Python.

    python examples/join_election.py [--endpoints HOST:PORT,...] ELECTION VALUE

Campaigns with VALUE, prints when elected, holds leadership until Ctrl-C or SIGTERM, then
resigns so the next candidate takes over at once. Uses gee-h's blocking API.
"""

import argparse
import os
import signal
import sys
import threading
import time

import geeh


def main() -> int:
    parser = argparse.ArgumentParser(description="Join an election and lead until Ctrl-C.")
    parser.add_argument(
        "--endpoints",
        default=os.environ.get("GEEH_ENDPOINTS", "127.0.0.1:2379"),
        help="etcd endpoints, comma-separated (default: $GEEH_ENDPOINTS or 127.0.0.1:2379)",
    )
    parser.add_argument("--ttl", type=int, default=5, help="lease TTL in seconds (default: 5)")
    parser.add_argument("election", help="the election name")
    parser.add_argument("value", help="this candidate's value")
    args = parser.parse_args()

    interrupted = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: interrupted.set())

    try:
        with geeh.ActiveCompletionQueue() as queue:
            election = geeh.LeaderElection(
                queue, args.endpoints, args.election, args.value, ttl=args.ttl
            )
            elected = election.campaign()

            # ... block until elected or interrupted, whichever comes first ...
            while not elected.done() and not interrupted.is_set():
                time.sleep(0.02)

            if elected.done() and elected.result():
                print(f"elected: {election.key}, with value={args.value}", flush=True)
                # ... lead until interrupted; a real program would do its work here ...
                while election.elected and not interrupted.is_set():
                    time.sleep(0.02)
                if not interrupted.is_set():
                    print("leadership lost", file=sys.stderr)
                    return 1

            election.resign()  # hands over to the next candidate, or leaves the queue
            return 0
    except geeh.GeehError as err:
        print(f"join_election: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
