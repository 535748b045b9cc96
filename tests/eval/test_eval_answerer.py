"""The engine-backed answerer of `data balance`: grouping and lenient answers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mmsr.eval.answerer import EngineAnswerer, answers_by_group, lenient_answer
from mmsr.rollout.trajectory import Turn


def trajectory(group: int, answer: str | None, last_text: str = ""):
    turns = [Turn(text=last_text, action="answer" if answer else "invalid", observation="")]
    return SimpleNamespace(group=group, answer=answer, turns=turns)


def test_answers_are_grouped_by_sample():
    trajectories = [
        trajectory(1, "b1"),
        trajectory(0, "a1"),
        trajectory(1, None),
        trajectory(0, "a2"),
    ]
    assert answers_by_group(trajectories, 2) == [["a1", "a2"], ["b1", None]]


def test_lenient_answer_reads_untagged_text():
    assert (
        lenient_answer(trajectory(0, "Paris", "<reason>x</reason><answer>Paris</answer>"))
        == "Paris"
    )
    plain = trajectory(0, None, "The capital is <b>Abu Dhabi</b>.")
    assert lenient_answer(plain) == "The capital is Abu Dhabi ."
    assert lenient_answer(trajectory(0, None, "<reason></reason>")) is None
    grouped = answers_by_group([plain], 1, lenient=True)
    assert grouped == [["The capital is Abu Dhabi ."]]
    assert answers_by_group([plain], 1) == [[None]]


def test_k_answers_need_sampling():
    with pytest.raises(ValueError, match="k=3: k answers must vary"):
        EngineAnswerer(policy=None, tools=None, temperature=0).answer_with_search([], 3, 0)
    with pytest.raises(ValueError, match="--temperature -1"):
        EngineAnswerer(policy=None, tools=None, temperature=-1)


def test_engine_answerer_tiny_policy(tiny_policy):
    from mmsr.eval.modes import EvalConfig
    from mmsr.eval.samples import load_eval_samples

    samples = load_eval_samples("world:val", limit=2)
    answerer = EngineAnswerer(tiny_policy, None, EvalConfig(max_new_tokens=6), lenient=True)
    answers = answerer.answer_without_search(samples, k=3, seed=0)
    assert [len(a) for a in answers] == [3, 3]
    # the random model writes no tags; lenient answers are its (sampled) text
    assert all(a is None or isinstance(a, str) for group in answers for a in group)
    # one greedy answer each (the SFT model's check of the train set): the same twice
    greedy = EngineAnswerer(tiny_policy, None, EvalConfig(max_new_tokens=6), temperature=0)
    once = greedy.answer_without_search(samples, k=1, seed=0)
    assert [len(a) for a in once] == [1, 1]
    assert greedy.answer_without_search(samples, k=1, seed=5) == once


@pytest.mark.parametrize("reasoning", ["fixed", "model"])
def test_greedy_rag_answers_are_the_evaluations(tiny_policy, reasoning):
    """One greedy RAG answer each is what `mmsr eval --mode rag` answers with the same
    options: the answerer runs the workflow the config names (fixed or own reasoning)."""
    from mmsr.eval.modes import EvalConfig, trajectories_for
    from mmsr.eval.samples import load_eval_samples

    samples = load_eval_samples("world:val", limit=2)
    config = EvalConfig(mode="rag", max_new_tokens=5, rag_query="model", rag_reasoning=reasoning)
    # lenient: the last turn's text, forced reasoning included (the tiny model's answer
    # tags are rare)
    answerer = EngineAnswerer(tiny_policy, None, config, temperature=0, lenient=True)
    evaluated = trajectories_for(tiny_policy, None, samples, config)
    answers = answerer.answer_with_search(samples, k=1, seed=0)
    assert answers == [[lenient_answer(t)] for t in evaluated] and answers[0][0]
