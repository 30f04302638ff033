"""The exceptions gee-h raises: one hierarchy, rooted at :class:`GeehError`.

::

    GeehError
    ├── InvalidArgument          bad input (also a ValueError)
    ├── ClosedError              the client, queue or observer was closed
    ├── Timeout                  a blocking call did not finish in time (also a TimeoutError)
    ├── WrongThread              a blocking call from the thread that must serve it (a RuntimeError)
    ├── ForkedError              used in a process forked after it was created: make it there
    ├── EtcdError                etcd answered with an error
    │   ├── EtcdUnavailable      no endpoint answered within the time allowed
    │   ├── Compacted            a watch's revision was compacted away: read again
    │   ├── StreamUnauthenticated  a stream was refused for an expired auth token
    │   └── PermissionDenied     the user may not read or write that key (RBAC)
    └── ElectionError            the election went on without us
        ├── SessionExpired       our lease expired, was revoked, or its local deadline passed
        ├── CandidateRemoved     our candidate key was deleted by someone else
        ├── NotLeader            we no longer lead (proclaim or resign after loss)
        └── LeadershipLost       a leadership block was interrupted by the loss (.reason)
"""

from __future__ import annotations


class GeehError(Exception):
    """Base class of every exception gee-h raises on purpose."""


class InvalidArgument(GeehError, ValueError):
    """An argument is of the wrong type or out of range; the message names it."""


class ClosedError(GeehError):
    """The object (client, completion queue, observer) has been closed."""


class Timeout(GeehError, TimeoutError):
    """A blocking call did not finish within its timeout; the operation was cancelled."""


class WrongThread(GeehError, RuntimeError):
    """A blocking call was made on the completion queue's own thread, which would deadlock."""


class ForkedError(GeehError):
    """A client or completion queue was used in a process forked after it was created.

    gRPC channels and the threads serving them do not survive ``fork()``: create clients
    and queues in the process that uses them (after forking). The message names the pid
    the object was created in.
    """


class EtcdError(GeehError):
    """etcd rejected a request; ``code`` is the gRPC status code name, if any."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class EtcdUnavailable(EtcdError):
    """No etcd endpoint answered within the time allowed (dial or request timeout)."""


class ElectionError(GeehError):
    """A campaign or leadership ended because the election moved on without us."""


class SessionExpired(ElectionError):
    """The lease behind a campaign is gone: expired, revoked, or its local deadline passed."""


class CandidateRemoved(ElectionError):
    """Our candidate key was deleted by someone else while we waited or led."""


class NotLeader(ElectionError):
    """The operation needs leadership, and this candidate does not (or no longer) lead."""


class TransferFailed(ElectionError):
    """A hand-over to a chosen candidate could not complete; the leader still leads."""


class LeadershipLost(ElectionError):
    """Leadership ended inside ``async with election.campaign(...)``, which cancelled the block.

    ``reason`` is the loss: a :class:`SessionExpired` or a :class:`CandidateRemoved`.
    """

    def __init__(self, reason: BaseException) -> None:
        super().__init__(f"leadership lost: {reason}")
        self.reason = reason


class Compacted(EtcdError):
    """The revision a watch needed has been compacted away: read afresh, then watch again."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted up to {compact_revision}", code="OUT_OF_RANGE")
        self.compact_revision = compact_revision


class StreamUnauthenticated(EtcdError):
    """A stream was refused for an expired auth token: authenticate, then re-open it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="UNAUTHENTICATED")


class PermissionDenied(EtcdError):
    """etcd refused the user access to a key (RBAC), with a fresh token: the message names
    the key and the user. A watch refused so ends with it; the client's other watches go on."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="PERMISSION_DENIED")
