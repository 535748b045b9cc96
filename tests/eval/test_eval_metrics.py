"""Metrics against hand-computed numbers."""

from __future__ import annotations

import pytest

from mmsr.eval.metrics import behaviour, compute_metrics, searches_allowed
from mmsr.eval.records import EvalRecord
from mmsr.rollout.protocol import SearchLimits


def test_searches_allowed_per_mode():
    limits = SearchLimits(3, 1, 2)
    assert searches_allowed("direct", limits) == 0
    assert searches_allowed("rag", limits) == 2
    assert searches_allowed("ondemand", limits) == 3


def test_overall_numbers_by_hand(make_record):
    records = [
        make_record("a", "Paris"),  # correct, no search
        make_record("b", "paris, France", n_text=1),  # EM wrong, SubEM right; searched
        make_record("c", "Lyon", n_image=1, n_text=1),  # wrong, searched
        make_record("d", None, qtype="flag", category="search_required"),  # no answer
    ]
    m = compute_metrics(records, "ondemand", SearchLimits(3, 1, 2))
    assert m["n"] == 4
    assert m["acc"] == pytest.approx(1 / 4)  # rule = EM by default
    assert m["acc_em"] == pytest.approx(1 / 4)
    assert m["acc_subem"] == pytest.approx(2 / 4)
    assert m["acc_judge"] is None
    assert m["sr"] == pytest.approx(2 / 4)
    assert m["call_ratio"] == pytest.approx(3 / (4 * 3))
    assert m["image_search_rate"] == pytest.approx(1 / 4)
    assert m["text_search_rate"] == pytest.approx(2 / 4)
    assert m["text_calls_per_question"] == pytest.approx(2 / 4)
    assert m["answered"] == pytest.approx(3 / 4)
    assert m["behaviour_counts"] == {
        "correct_no_search": 1,
        "correct_search": 0,
        "wrong_no_search": 1,
        "wrong_search": 2,
    }
    assert sum(m["behaviour"].values()) == pytest.approx(1.0)
    assert set(m["by_qtype"]) == {"capital", "flag"}
    assert m["by_qtype"]["capital"]["n"] == 3
    assert m["by_qtype"]["flag"]["acc"] == 0.0
    assert m["by_category"]["search_required"]["n"] == 1
    # a record counts under each of its tags
    assert m["by_tag"]["geography"]["n"] == 4
    assert m["finish_reasons"] == {"answer": 3, "max_turns": 1}


def test_rag_sr_is_full_and_direct_has_no_call_ratio(make_record):
    rag = [make_record(str(i), "Paris", n_image=1, n_text=1, mode="rag") for i in range(3)]
    m = compute_metrics(rag, "rag")
    assert m["sr"] == 1.0 and m["call_ratio"] == 1.0
    direct = [make_record("a", "Paris", mode="direct")]
    assert compute_metrics(direct, "direct")["call_ratio"] is None


def test_judge_verdict_wins_and_is_summarised(make_record):
    a = make_record("a", "Paris")
    b = make_record("b", "City of Paris")
    b.correct_judge, b.judge = True, "llm:m"
    a.correct_judge, a.judge = True, "llm:m"
    c = make_record("c", "Rome")
    c.judge = "rule-fallback"
    m = compute_metrics([a, b, c], "direct")
    assert m["acc"] == pytest.approx(2 / 3)
    assert m["acc_em"] == pytest.approx(1 / 3)
    assert m["acc_judge"] == pytest.approx(1.0)  # over the 2 judged records
    assert m["judge"]["fallbacks"] == 1
    assert m["judge"]["agreement_with_rule"] == pytest.approx(1 / 2)
    assert behaviour(b) == "correct_no_search"


def test_empty_run_gives_zeros_not_errors():
    m = compute_metrics([], "ondemand")
    assert m["n"] == 0 and m["acc"] == 0.0 and m["call_ratio"] is None


def test_record_json_round_trip(make_record):
    record = make_record("a", "Paris", n_image=1)
    again = EvalRecord.from_json(record.to_json())
    assert again == record and again.searched
