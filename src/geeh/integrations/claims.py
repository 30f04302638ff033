"""Fire-time claims: before a scheduled run, record its fire time with a fenced write.

The record is one key per job holding the newest fire time claimed, written in one Txn only
if the claimant still leads (its candidate key still has its token: the fence) and the time
is newer than the one recorded. So a deposed leader claims nothing, and a fire time is
claimed once across every leader there ever was. Times are kept as etcd compares values,
bytewise: microseconds since 1970, 20 digits.
"""

from __future__ import annotations

import datetime
import logging

from .. import kv
from ..errors import EtcdError, NotLeader
from ..keys import show
from ..leadership import Leadership

log = logging.getLogger("geeh.claims")

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def stamp(run_time: datetime.datetime) -> bytes:
    """A fire time (timezone-aware) as recorded: microseconds since 1970, 20 digits."""
    return b"%020d" % ((run_time - EPOCH) // datetime.timedelta(microseconds=1))


async def claim_runs(
    leadership: Leadership | None, key: bytes, run_times: list[datetime.datetime]
) -> list[datetime.datetime]:
    """The ``run_times`` that ``leadership`` may run under the record at ``key``: none if it
    does not lead (or the claim's outcome is unknown), else those newer than the record,
    the newest of them recorded."""
    if not run_times:
        return []
    newest = max(run_times)
    if leadership is None or not leadership.is_leader:
        log.info("%s at %s not run: not leader", show(key), newest)
        return []
    record_if_newer = kv.txn(
        [kv.version(key) == 0],  # a value compare fails on a missing key: create it
        [kv.put(key, stamp(newest))],
        [kv.txn([kv.value(key) < stamp(newest)], [kv.put(key, stamp(newest))])],
    )
    try:
        result = await leadership.txn([], [kv.get(key), record_if_newer])
    except NotLeader:
        log.info("%s at %s not run: no longer leader", show(key), newest)
        return []
    except EtcdError as err:  # it may or may not have landed: running could run it twice
        log.warning("%s at %s not run: the claim failed: %s", show(key), newest, err)
        return []
    previous: list[kv.KeyValue] = result.responses[0]
    last = previous[0].value if previous else b""
    claimed = [t for t in run_times if stamp(t) > last]
    if len(claimed) < len(run_times):
        log.info("%s: %d run(s) claimed before, skipped", show(key), len(run_times) - len(claimed))
    return claimed
