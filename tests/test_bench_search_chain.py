"""bench/search_chain.py: which steps of the search chain one trajectory got through."""

from __future__ import annotations

import pytest


@pytest.fixture
def bench(bench_script):
    return bench_script("search_chain")


def record(top_title, query, text_results, prediction_correct, golds=(".gd", "gd"), answer=None):
    calls = [
        {"kind": "image_search", "query": "",
         "response": {"results": [{"title": f"{top_title} — Overview"}]}},
        {"kind": "text_search", "query": query,
         "response": {"results": [{"title": "t", "snippet": text_results}]}},
    ]  # fmt: skip
    return {"golds": list(golds), "correct_rule": prediction_correct, "prediction": answer,
            "trajectory": {"tool_calls": calls}}  # fmt: skip


def grenada_steps(bench, top_title, query, text_results, answer=".gb"):
    """The steps of a wrong answer to Grenada's internet-code question."""
    trajectory = record(top_title, query, text_results, prediction_correct=False, answer=answer)
    return bench.chain_steps(trajectory, "Grenada", "internet country code")


def test_a_read_failure_is_put_on_the_last_step(bench):
    steps = grenada_steps(
        bench, "Grenada", "Grenada internet country code", "Internet country code: .gd"
    )
    assert steps == {
        "searched": True, "image_top1": True, "text": True, "query_entity": True,
        "query_own_wrong_name": False, "query_topic": True, "gold_in_results": True,
        "correct": False,
        "correct_after_gold": False, "query_as_answer": False,
    }  # fmt: skip


def test_an_answer_that_repeats_the_query_is_counted(bench):
    query, results = "Grenada internet country code", "Internet country code: .gd"
    for answer in (query, "Grenada internet", "grenada"):
        assert grenada_steps(bench, "Grenada", query, results, answer=answer)["query_as_answer"]
    # Not when the results did not hold the gold: then the search failed, not the read.
    assert not grenada_steps(bench, "Grenada", query, "Capital: x", answer=query)["query_as_answer"]
    assert not grenada_steps(bench, "Grenada", query, results, answer=None)["query_as_answer"]


def test_a_wrong_country_fails_from_the_image_step(bench):
    steps = grenada_steps(bench, "North Macedonia", "The results say:", "Capital: Skopje")
    assert not steps["image_top1"] and not steps["query_entity"]
    assert not steps["query_topic"] and not steps["gold_in_results"]
    no_search = {"golds": ["x"], "correct_rule": True, "trajectory": {"tool_calls": []}}
    steps = bench.chain_steps(no_search, "Grenada", "capital")
    assert steps["correct"] and not steps["searched"] and not steps["correct_after_gold"]


def test_a_query_for_the_models_own_wrong_name_is_counted_in_a_grpo_rollout(bench):
    # a GRPO rollout: the trajectory at top level, its reward's accuracy, its answer
    rollout = record("Nauru", "Israel internet country code", "Internet country code: .il",
                     prediction_correct=None, golds=(".nr",))  # fmt: skip
    rollout = {**rollout.pop("trajectory"), "golds": rollout["golds"], "answer": ".il",
               "reward": {"acc": 0.0}}  # fmt: skip
    said = "<reason>This is the flag of Israel. Its internet country code I look up.</reason>"
    rollout["turns"] = [{"text": said}]
    steps = bench.chain_steps(rollout, "Nauru", "internet country code")
    assert steps["query_own_wrong_name"] and steps["image_top1"] and not steps["correct"]
    # a name the image search agrees with, or the right one, is not a wrong name
    for top, name in (("Israel", "Nauru"), ("Nauru", "Israel")):
        steps = bench.chain_steps({**rollout, "tool_calls": record(top, "Israel x", "", 0)[
            "trajectory"]["tool_calls"]}, name, "internet country code")  # fmt: skip
        assert not steps["query_own_wrong_name"]
