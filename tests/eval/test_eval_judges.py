"""Judges: the rule judge, and the LLM judge against an in-test OpenAI-compatible server."""

from __future__ import annotations

import pytest

from mmsr.eval.judges import JudgeError, LLMJudge, RuleJudge, apply_judges, parse_verdict
from mmsr.reward import RewardConfig

from .conftest import FakeChat, completion


def judge_for(server: FakeChat, **kwargs) -> LLMJudge:
    return LLMJudge(
        base_url=server.url, model="judge-m", api_key="sk-test", backoff_s=0.0, **kwargs
    )


def test_parse_verdict():
    assert parse_verdict("CORRECT") is True
    assert parse_verdict("incorrect.") is False
    assert parse_verdict("<think>is it CORRECT?</think> INCORRECT") is False
    assert parse_verdict("maybe") is None


def test_rule_judge_em_and_subem():
    assert RuleJudge().verdict("q", ["Paris"], "the paris").correct
    assert not RuleJudge().verdict("q", ["Paris"], "Paris, France").correct
    assert RuleJudge(RewardConfig(match="subem")).verdict("q", ["Paris"], "Paris, France").correct
    assert not RuleJudge().verdict("q", ["Paris"], None).correct


def test_llm_judge_speaks_chat_completions(fake_chat):
    fake_chat.script["City of Light"] = [(200, completion("CORRECT"))]
    fake_chat.script["Lyon"] = [(200, completion("INCORRECT"))]
    judge = judge_for(fake_chat)
    assert judge.verdict("Capital of France?", ["Paris"], "City of Light").correct
    assert not judge.verdict("Capital of France?", ["Paris"], "Lyon").correct
    request = fake_chat.requests[0]
    assert request["model"] == "judge-m" and request["temperature"] == 0.0
    assert request["messages"][0]["role"] == "system"
    assert "- Paris" in request["messages"][1]["content"]
    assert fake_chat.headers[0]["Authorization"] == "Bearer sk-test"
    # no answer: no call at all
    assert not judge.verdict("q", ["Paris"], None).correct
    assert len(fake_chat.requests) == 2


def test_llm_judge_retries_server_errors(fake_chat):
    fake_chat.script["Paris"] = [(503, "{}"), (200, completion("CORRECT"))]
    assert judge_for(fake_chat, retries=1).verdict("q", ["Paris"], "Paris").correct
    assert len(fake_chat.requests) == 2


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (400, '{"error": {"message": "bad model"}}', "HTTP 400"),
        (503, "overloaded", "HTTP 503"),
        (200, "<html>not json</html>", "not chat-completions JSON"),
        (200, '{"choices": []}', "not chat-completions JSON"),
        (200, completion(None), "not text"),
        (200, completion("I think it is fine"), "neither CORRECT nor INCORRECT"),
    ],
)
def test_llm_judge_errors_name_the_problem(fake_chat, status, body, message):
    fake_chat.script["Paris"] = [(status, body)]
    with pytest.raises(JudgeError, match=message) as info:
        judge_for(fake_chat, retries=0).verdict("Capital of France?", ["Paris"], "Paris")
    assert fake_chat.url in str(info.value) and "Capital of France?" in str(info.value)


def test_unreachable_endpoint_is_a_judge_error():
    judge = LLMJudge(base_url="http://127.0.0.1:9/v1", model="m", retries=0, timeout_s=2)
    with pytest.raises(JudgeError, match="request failed"):
        judge.verdict("q", ["Paris"], "Paris")


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="judge-model"):
        LLMJudge(base_url="http://x", model="")
    with pytest.raises(ValueError, match="judge-url"):
        LLMJudge(base_url="ftp://x", model="m")


def test_apply_judges_fallback_and_fail(fake_chat, make_record):
    fake_chat.script["Lutetia"] = [(200, completion("CORRECT"))]
    fake_chat.script["Paris"] = [(200, "garbage")]
    records = [make_record("a", "Lutetia"), make_record("b", "Paris"), make_record("c", None)]
    judge = judge_for(fake_chat, retries=0)
    with pytest.warns(RuntimeWarning, match="failed on 1 of 3"):
        apply_judges(records, RuleJudge(), judge, on_error="fallback")
    a, b, c = records
    assert a.judge == "llm:judge-m" and a.correct_judge is True and a.correct_rule is False
    assert a.correct
    assert b.judge == "rule-fallback" and b.correct_judge is None and b.correct  # rule verdict
    assert "not chat-completions JSON" in b.judge_note
    assert c.judge == "llm:judge-m" and c.correct_judge is False
    with pytest.raises(JudgeError, match=r"\(sample b\)"):
        apply_judges(records, RuleJudge(), judge, on_error="fail")
