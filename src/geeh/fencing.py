"""The compare guards a candidate's writes carry, so that a late or deposed one changes nothing.

Every write gee-h makes to a candidate key, and every fenced write a leader makes, is a Txn
guarded by one of these: on the key's create revision (the fencing token: the key is still
the very one we created) and, where a newer value of ours could be overwritten, on its mod
revision. A request that etcd applies late, or one from a leader that was deposed meanwhile,
then fails instead of changing anything.
"""

from __future__ import annotations

from ._proto import rpc_pb2 as rpc


def owns(key: bytes, token: int) -> rpc.Compare:
    """The fencing guard: true while ``key`` is still the one created at revision ``token``."""
    return rpc.Compare(
        key=key, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL, create_revision=token
    )


def modified_at(key: bytes, revision: int) -> rpc.Compare:
    """True while ``key`` was last written at ``revision``: guards a write against a newer one."""
    return rpc.Compare(
        key=key, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=revision
    )
