"""The benchmark report's renderer: fields and blocks filled from results, typos caught."""

from __future__ import annotations

import json
import pathlib

import pytest

from benchmarks.render import TemplateError, render
from benchmarks.report import values

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = {
    "handoff": {"1-member": {"gee-h": {"median": 0.00344, "n": 25}, "etcdctl": {"median": 0.004}}},
    "crash": {"1-member": {"2": {"p99": 2.351}}},
    "fleet": {},
    "note": None,
}


def test_fields_formats_and_ratios() -> None:
    template = (
        "{{ handoff.1-member.gee-h.median | ms }} ms over {{ handoff.1-member.gee-h.n }}, "
        "ratio {{ handoff.1-member.gee-h.median / handoff.1-member.etcdctl.median | .2f }}, "
        "p99 {{ crash.1-member.2.p99 | .1f }} s, {{ note }}"
    )
    assert render(template, RESULTS) == "3.44 ms over 25, ratio 0.86, p99 2.4 s, n/a"


def test_blocks_keep_what_was_measured_and_drop_the_rest() -> None:
    template = (
        "<!-- if handoff -->A<!-- if handoff.3-member -->B<!-- end handoff.3-member -->"
        "<!-- end handoff -->\n<!-- if fleet -->C {{ fleet.x }}<!-- end fleet -->"
        "<!-- if shards -->D {{ shards.x }}<!-- end shards -->E"
    )
    assert render(template, RESULTS) == "AE"  # a block takes its closing newline along


@pytest.mark.parametrize(
    "template",
    [
        "{{ handoff.1-member.gee-h.mean }}",  # a typo: no such figure
        "{{ handoff.3-member.gee-h.median }}",  # a cluster this run did not measure
        "{{ handoff.1-member.gee-h.median / nothing }}",
        "<!-- if handoff -->unclosed",
    ],
)
def test_a_field_the_results_cannot_fill_is_an_error(template: str) -> None:
    with pytest.raises(TemplateError):
        render(template, RESULTS)


def test_the_missing_figure_is_named() -> None:
    with pytest.raises(TemplateError, match=r"line 2, \{\{ crash.1-member.5.p99 \}\}"):
        render("ok\n{{ crash.1-member.5.p99 }}", RESULTS)


def test_the_committed_template_renders_from_the_committed_results() -> None:
    """Editing the prose or the results cannot leave a field unfilled."""
    data = json.loads((ROOT / "benchmarks" / "results" / "results.json").read_text())
    template = (ROOT / "benchmarks" / "report.md.tmpl").read_text()
    text = render(template, values(data))
    assert "{{" not in text and "<!--" not in text
    headline = text.split("## Headline figures\n\n")[1].split("\n\n")[0].splitlines()
    assert len(headline) == 2 + 2 * 2 + 2 + 2 * 2 + 2 + 1 + 3  # header, rule, every row


def test_results_become_plain_json() -> None:
    from benchmarks.common import Series, jsonable

    s = Series("x", samples=[0.003, 0.001, 0.002])
    out = jsonable({("concurrent", "gee-h"): s, 2: Series("empty")})
    assert out["concurrent-gee-h"]["median"] == 0.002 and out["concurrent-gee-h"]["n"] == 3
    assert out["2"]["median"] is None  # NaN: no samples
    assert json.loads(json.dumps(out)) == out


def test_a_merge_replaces_the_stages_run_again_and_keeps_the_rest() -> None:
    from benchmarks.run import _merged

    def run(stages: dict[str, str], errors: dict[str, str]) -> dict[str, object]:
        meta = {"date": "d", "quick": False, "elapsed": 1.0, "merged": [], "errors": errors}
        return {"meta": {**meta, "stages": {key: {} for key in stages}}, **stages}

    old = run({"crash": "old", "scale": "old"}, {"crash": "crash: failed"})
    merged = _merged(old, run({"crash": "new"}, {}))
    assert merged["crash"] == "new" and merged["scale"] == "old"
    assert merged["meta"]["errors"] == {}
    assert merged["meta"]["merged"][0].startswith("crash (run again on d")
