"""A seeded soak test with fault injection and a checker of what the leaders actually did.

``python -m chaos --seconds 60 --seed 1`` starts a 3-member local etcd, a TCP proxy between
every worker and every member, several workers (candidates that, while they lead, do fenced
writes to one register key) and two observers; a nemesis driven by the seed injects faults
(members and workers killed, frozen, cut off); at the end every fault is healed, the workers
stop, and the checker reads the histories the processes wrote and etcd's own revisions. It
prints each property with its number of violations and exits 0 only if all are zero.

Modules: ``controller`` (the processes and the run), ``nemesis`` (the faults), ``worker`` and
``observer`` (the processes), ``history`` (JSONL files, etcd's revisions), ``checker`` (the
properties), ``compat`` and ``cluster`` (what is borrowed from gee-h and its test tooling).
"""
