"""When a waiting candidate has won: the rule, and the line of watches that feeds it.

The rule is Go's: a candidate leads at revision R when its key exists at R and no key created
before it does. Go reads again after each deletion to check it; gee-h reads once and then
follows deletions on several watches (see :class:`Line`). etcd orders events within one watch
only: a watch that fell behind is served later from history while the others on the same
stream go ahead, so the revisions seen on two watches say nothing about each other. The rule
below is written with that in mind, and everything that makes the line fast is outside it.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterable

from .errors import CandidateRemoved, ClosedError, Compacted, ElectionError
from .keys import show
from .watch import NOPUT, Inbox, Mailbox, Watch, WatchHub

# How long a waiting candidate lets a hand-off settle before its read-ahead (see Line.wait).
READ_AHEAD_DELAY = 0.05


class Verdict(enum.Enum):
    LEAD = "we lead: the ordered watch showed our key in place through the last deletion"
    CONFIRM = "we lead if a read at or after WinRule.highest shows our key in place"


class WinRule:
    """The rule for declaring a win, fed with each batch of deletions the line's watches deliver.

    Older keys never reappear (create revisions only grow), so once every key the read saw
    ahead of ours has been seen deleted, and the read saw all of them (``complete``), none is
    left at ``highest``, the highest deletion revision seen on any watch. Our key existed at
    the read; it still exists at ``highest`` if the ordered watch, which covers our key and
    delivers its events in revision order, has delivered through ``highest`` without our
    deletion (LEAD). If not, a read at or after ``highest`` must show it (CONFIRM).
    """

    def __init__(self, key: bytes, older: Iterable[bytes], complete: bool, read: int) -> None:
        self.key = key
        self.older = set(older)  # keys ahead of ours at the read, not yet seen deleted
        self.complete = complete  # the read saw every key created before ours
        self.highest = read  # the highest revision of any deletion delivered since the read
        self.through = read  # the ordered watch has delivered every event up to here

    def saw(self, deleted: set[bytes], revision: int, *, ordered: bool) -> Verdict | None:
        """One batch: the keys it deleted, its last revision, whether the ordered watch sent it."""
        if self.key in deleted:
            raise CandidateRemoved(f"candidate key {show(self.key)} was deleted while waiting")
        self.older -= deleted
        self.highest = max(self.highest, revision)
        if ordered:
            self.through = max(self.through, revision)
        if self.older or not self.complete:
            return None
        return Verdict.LEAD if self.through >= self.highest else Verdict.CONFIRM


class Line:
    """The keys just ahead of ours in line (newest first), and the watches that feed the rule.

    What is here only makes waiting cheap and hand-offs fast; the rule decides the win:
    - the read returns our key and up to two older ones, the predecessor and the key before
      it, each watched from the read's revision on. When the key before the predecessor goes,
      the predecessor leads; we read again a moment later (never, if the read saw the whole
      line), so that when the predecessor goes we can win with no read at all;
    - a line that is ``complete`` watches the key range spanning our key and the
      predecessor's: the ordered watch, whose events prove our key in place (LEAD). But key
      order is lease-ID order, not join order (leases from different members, or granted
      concurrently), so the range may hold other candidates' keys, whose deletions would reach
      us too: a herd in a large election. After the first deletion of such a key the line
      watches the predecessor's key alone, and a win is confirmed by a read (CONFIRM).
    Returns None from :meth:`wait` when it is time to read again.
    """

    def __init__(
        self, hub: WatchHub, key: bytes, older: list[bytes], *, complete: bool, read: int
    ) -> None:
        self._hub = hub
        self.key = key
        self.older = older
        self.complete = complete
        self.rule = WinRule(key, older, complete, read)
        self._read = read
        self._inbox: Inbox = Mailbox()
        self._watches: dict[bytes, Watch] = {}
        self._ordered: Watch | None = None

    def _watch_predecessor(self, revision: int, *, ordered: bool) -> None:
        predecessor = self.older[0]
        if ordered:
            low, high = sorted((self.key, predecessor))
            self._ordered = self._watch(low, high + b"\x00", revision)
        else:
            self._ordered = None
            self._watch(predecessor, b"", revision)

    def _watch(self, key: bytes, range_end: bytes, revision: int) -> Watch:
        w = self._watches[key] = self._hub.watch(
            key, range_end=range_end, start_revision=revision, filters=[NOPUT], queue=self._inbox
        )
        return w

    async def wait(self, gone: asyncio.Future[BaseException]) -> Verdict | None:
        """Follow deletions ahead of us until the rule gives a verdict, or a read is due."""
        self._watch_predecessor(self._read + 1, ordered=self.complete)
        if len(self.older) == 2:
            self._watch(self.older[1], b"", self._read + 1)

        def woken(reason: asyncio.Future[BaseException]) -> None:
            self._inbox.put_nowait((None, reason.result()))  # type: ignore[arg-type]

        gone.add_done_callback(woken)
        read_at: float | None = None
        try:
            while True:
                try:
                    async with asyncio.timeout_at(read_at):
                        w, item = await self._inbox.get()
                except TimeoutError:
                    return None
                if w is not None and self._watches.get(w.key) is not w:
                    continue  # cancelled already
                if isinstance(item, Compacted):
                    return None
                if isinstance(item, BaseException):
                    raise reason(gone, item)
                deleted = {e.kv.key for e in item.events}  # PUTs are filtered out
                revision = item.events[-1].kv.mod_revision
                ordered = w is self._ordered
                verdict = self.rule.saw(deleted, revision, ordered=ordered)
                if verdict is not None:
                    return verdict
                if ordered and deleted - {*self.older, self.key}:
                    # Crowded. From the next revision: batches the hub queued behind this one
                    # are dropped with the old watch, and the new one delivers them again.
                    self._watches.pop(w.key).cancel()
                    self._watch_predecessor(revision + 1, ordered=False)
                if len(self.older) == 2 and self.older[1] in deleted:
                    # Its watch is left to the line's end: no cancel sent mid-hand-off.
                    self.older.pop()
                    if not self.complete:
                        # Why later: this deletion is usually the old leader's, and our read
                        # (etcd sorts the whole election for it) would compete with the
                        # successor's takeover. Nothing needs it before the next hand-off.
                        read_at = asyncio.get_running_loop().time() + READ_AHEAD_DELAY
                if self.older[0] in deleted:
                    return None  # a new predecessor, or an incomplete line: read again
        finally:
            gone.remove_done_callback(woken)

    def __enter__(self) -> Line:
        return self

    def __exit__(self, *exc: object) -> None:
        for w in self._watches.values():
            w.cancel()
        self._watches.clear()


def reason(gone: asyncio.Future[BaseException], item: BaseException) -> BaseException:
    """Why a wait ended on a watch error: the campaign's own end if it has one."""
    why = gone.result() if gone.done() else item
    if isinstance(why, ElectionError | ClosedError):
        return why
    return ClosedError(str(why))
