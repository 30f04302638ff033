"""gee-h benchmarks, side by side with etcd's own Go client (`etcdctl elect`).

Run everything and write BENCHMARKS.md (plots in benchmarks/results/)::

    python -m benchmarks            # full run, about 8 minutes
    python -m benchmarks --quick    # about 2.5 minutes, fewer trials
    python -m benchmarks --report-only   # rewrite BENCHMARKS.md from the last run

Every benchmark starts its own etcd (geeh.testing.LocalEtcdCluster) and stops every
process it started. Benchmarks measure; they assert nothing about timing.
"""
