"""Run outputs without a model: samples selection, writing and reading a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmsr.eval.modes import EvalConfig, RagForcer, rag_turns, records_from
from mmsr.eval.run import judge_and_measure, read_records, write_run
from mmsr.eval.samples import load_eval_samples
from mmsr.rollout.protocol import SearchLimits, parse_action


def test_world_splits_and_limits():
    test = load_eval_samples("world:test", limit=3)
    assert len(test) == 3 and all(s.split == "test" for s in test)
    mixed = load_eval_samples("world:test", limit=20, shuffle_seed=0)
    assert len({s.extra.get("qtype") for s in mixed}) > 1
    with pytest.raises(ValueError, match="unknown world split"):
        load_eval_samples("world:nope")
    with pytest.raises(FileNotFoundError, match="--data 'missing.parquet'"):
        load_eval_samples("missing.parquet")
    with pytest.raises(ValueError, match="--limit 0"):
        load_eval_samples("world:test", limit=0)


def test_fvqa_file_is_accepted():
    fixture = Path(__file__).parents[1] / "data" / "fvqa_mini.parquet"
    samples = load_eval_samples(str(fixture), limit=2)
    assert len(samples) == 2 and samples[0].images[0].bytes


def test_mode_budgets_and_rag_script():
    assert EvalConfig(mode="direct").limits == SearchLimits(1, 0, 0)
    assert EvalConfig(mode="rag").limits == SearchLimits(3, 1, 1)
    assert EvalConfig(mode="ondemand", max_text_search=1).limits == SearchLimits(3, 1, 1)
    with pytest.raises(ValueError, match="--mode 'web'"):
        EvalConfig(mode="web")
    image_turn, text_turn, answer_turn = rag_turns("What is  the capital\nof this country?")
    assert image_turn[1] and text_turn[1] and not answer_turn[1]
    finished = parse_action(answer_turn[0] + "Paris</answer>")
    assert finished.kind == "answer" and finished.answer == "Paris"
    assert parse_action(image_turn[0]).kind == "image_search"
    second = parse_action(text_turn[0])
    assert second.kind == "text_search"
    assert second.query == "What is the capital of this country?"
    prefix, whole = rag_turns("q", rag_query="model")[1]
    assert not whole and prefix.endswith("<text_search>")


def test_rag_forcer_emits_the_turns_then_lets_the_model_answer(tiny_policy):
    from mmsr.data.record import Sample

    tokenizer = tiny_policy.tokenizer
    forcer = RagForcer(tokenizer, [Sample(id="a", question="Capital?", answer="x")])
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for turn, expected in ((1, rag_turns("Capital?")[0][0]), (2, rag_turns("Capital?")[1][0])):
        emitted = []
        while (token := forcer(0, 0, turn, len(emitted))) != end:
            emitted.append(token)
        assert tokenizer.decode(emitted) == expected
    opening = tokenizer.encode(rag_turns("Capital?")[2][0], add_special_tokens=False)
    assert [forcer(0, 0, 3, step) for step in range(len(opening))] == opening
    assert forcer(0, 0, 3, len(opening)) is None  # the answer itself is the model's
    limited = RagForcer(tokenizer, [Sample(id="a", question="Capital?", answer="x")], "question", 5)
    model_part = len(opening)
    assert limited(0, 0, 3, model_part + 4) is None  # the model's budget, after the opening
    assert limited(0, 0, 3, model_part + 5) == end
    model_query = RagForcer(tokenizer, [Sample(id="a", question="q", answer="x")], "model")
    prefix = rag_turns("q", "model")[1][0]
    n = len(tokenizer.encode(prefix, add_special_tokens=False))
    assert model_query(0, 0, 2, n - 1) is not None and model_query(0, 0, 2, n) is None


class FakeTrajectory:
    """Only what records_from reads: `group` and `to_json()` (the rollout contract)."""

    def __init__(self, group, data):
        self.group, self._data = group, data

    def to_json(self):
        return self._data


def test_write_run_round_trip(tmp_path, make_record):
    samples = load_eval_samples("world:test", limit=2)
    trajectories = [
        FakeTrajectory(1, make_record("b", "x", n_image=1).trajectory),
        FakeTrajectory(0, make_record("a", samples[0].answer).trajectory),
    ]
    config = EvalConfig(mode="ondemand")
    records = records_from(samples, trajectories, config)
    assert [r.sample_id for r in records] == [s.id for s in samples]
    assert records[0].correct_rule and not records[1].correct_rule
    assert records[1].n_image_search == 1 and records[0].image.endswith(".jpg")
    run = judge_and_measure(records, config)
    assert run.metrics["acc"] == 0.5 and run.metrics["sr"] == 0.5
    paths = write_run(run, tmp_path / "out", samples)
    for name in ("metrics", "markdown", "html", "viewer", "trajectories"):
        assert paths[name].is_file() and paths[name].stat().st_size > 0
    assert read_records(paths["trajectories"]) == run.records
    assert json.loads(paths["metrics"].read_text())["config"]["mode"] == "ondemand"
    assert "data:image/" in paths["viewer"].read_text()
    with pytest.raises(RuntimeError, match="no trajectory for sample"):
        records_from(samples, trajectories[:1], config)


def test_model_reasoning_rag_forcer_forces_only_the_actions(tiny_policy):
    from mmsr.data.record import Sample
    from mmsr.eval.modes import RAG_REASON_LIMIT, ModelReasoningRagForcer, rag_actions
    from mmsr.rollout.engine import FREE_NO_STOP

    tokenizer = tiny_policy.tokenizer
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    forcer = ModelReasoningRagForcer(tokenizer, [Sample(id="a", question="Capital?", answer="x")])

    def run(turn, model_text):
        """The turn as the engine would build it: forced tokens, else the model's."""
        mine = list(model_text) if isinstance(model_text, list) else encode(model_text)
        emitted = []
        while True:
            token = forcer(0, 0, turn, len(emitted), tokens=emitted)
            if token == end:
                return tokenizer.decode(emitted), True
            if token is None or token == FREE_NO_STOP:
                if not mine:
                    return tokenizer.decode(emitted), False
                token = mine.pop(0)
            emitted.append(token)

    # The model reasons; once it closes </reason> the image search is forced, turn closed.
    text, closed = run(1, "I do not know this flag.</reason>anything")
    assert closed and text == "<reason>I do not know this flag.</reason><search><img></search>"
    # The text search with the question as the query, forced after the model's reasoning.
    text, closed = run(2, "It is Togo.</reason>")
    assert closed and text.endswith("</reason><text_search>Capital?</text_search>")
    # The answer: opened after the reasoning, completed by the model.
    text, closed = run(3, "Lome it is.</reason>Lome</answer>")
    assert not closed and text == "<reason>Lome it is.</reason><answer>Lome</answer>"
    # A model token that runs past the close (nano's "><") gets only the rest of the action.
    forcer.turn.reset()
    past = encode("><")
    if len(past) == 1:  # the tiny tokenizer may have no such token
        text, closed = run(2, encode("Togo.</reason") + past)
        assert closed and text.endswith("Togo.</reason><text_search>Capital?</text_search>")
    # Reasoning that never closes is closed by the forcer after RAG_REASON_LIMIT tokens.
    forcer.turn.reset()
    text, _ = run(1, " word" * (RAG_REASON_LIMIT + 10))
    assert text.endswith("</reason><search><img></search>")
    assert forcer.budget(96) >= 96 + RAG_REASON_LIMIT
    prefix, whole = rag_actions("q", rag_query="model")[1]
    assert prefix == "<text_search>" and not whole
