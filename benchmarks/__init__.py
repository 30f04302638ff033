"""gee-h benchmarks, side by side with etcd's own Go client (`etcdctl elect`).

    python -m benchmarks                  # full run: results JSON, plots, BENCHMARKS.md
    python -m benchmarks --quick          # fewer trials (the report says so)
    python -m benchmarks --only scale --merge   # measure one stage again, keep the rest
    python -m benchmarks --report-only    # re-render BENCHMARKS.md from the saved JSON

The figures go to benchmarks/results/results.json and the plots beside it; BENCHMARKS.md is
benchmarks/report.md.tmpl with its fields filled (see render.py): edit the prose there.

Adding a stage: a module whose ``async def run(cfg)`` (or ``run(cfg, endpoints, etcd)`` on
the runner's clusters) returns its results; one line in ``run.STAGES``; optionally a
function in ``report.TABLES`` that adds Markdown tables to its JSON section and one in
``plots.draw``; and a ``<!-- if NAME -->`` ... ``<!-- end NAME -->`` section in the template
that quotes ``{{ NAME.some.figure }}``. Every benchmark starts its own etcd and stops every
process it started. Benchmarks measure; they assert nothing about timing.
"""
