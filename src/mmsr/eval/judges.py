"""Judges: is a predicted answer correct?

- `RuleJudge` (the offline default): exact match or SubEM after normalisation, the very
  rule of the training reward (`mmsr.reward.answer_matches`).
- `LLMJudge`: a chat model behind any OpenAI-compatible `/chat/completions` endpoint, with
  our own prompt (the paper judges with GPT-4o; its prompt is not released). The model must
  reply with one word, CORRECT or INCORRECT.

Failure policy of the LLM judge (`on_error`): a failed call — connection error, timeout,
HTTP error after retries, a body that is not chat-completions JSON, or a reply that is
neither word — raises `JudgeError` naming the endpoint and the question with
`on_error="fail"`; with the default `on_error="fallback"` the record gets the rule verdict,
`judge="rule-fallback"` and the error in `judge_note`, a warning is printed once per run,
and the metrics count the fallbacks (`judge.fallbacks`), so a flaky endpoint never silently
turns into a different metric.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import httpx

from mmsr.eval.records import EvalRecord
from mmsr.reward import RewardConfig, answer_matches

JUDGE_SYSTEM_PROMPT = (
    "You grade answers to visual questions. You are given the question, the accepted "
    "reference answers and a candidate answer. The candidate is CORRECT when it names the "
    "same entity, value or fact as one of the references, allowing other spellings, "
    "abbreviations, translations, extra harmless detail and rounding; it is INCORRECT when "
    "it is wrong, hedges between several options, or says it does not know. Reply with "
    "exactly one word: CORRECT or INCORRECT."
)
_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_VERDICT_RE = re.compile(r"\b(INCORRECT|CORRECT)\b", re.IGNORECASE)
_RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})

OnError = Literal["fallback", "fail"]


class JudgeError(RuntimeError):
    """The LLM judge could not give a verdict (the message names endpoint and question)."""


@dataclass(frozen=True)
class Verdict:
    correct: bool
    note: str = ""  # the judge's raw reply, or why there is no real verdict


class RuleJudge:
    """EM / SubEM verdicts (no network)."""

    name = "rule"

    def __init__(self, config: RewardConfig | None = None):
        self.config = config or RewardConfig()

    def verdict(self, question: str, golds: Sequence[str], prediction: str | None) -> Verdict:
        del question
        if prediction is None:
            return Verdict(False, "no answer")
        return Verdict(answer_matches(prediction, golds, self.config))


def judge_messages(question: str, golds: Sequence[str], prediction: str) -> list[dict[str, str]]:
    references = "\n".join(f"- {gold}" for gold in golds)
    user = (
        f"Question: {question}\nReference answers:\n{references}\n"
        f"Candidate answer: {prediction}\nVerdict (CORRECT or INCORRECT):"
    )
    return [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_verdict(content: str) -> bool | None:
    """True / False from a judge reply; None when it holds neither word."""
    found = _VERDICT_RE.search(_THINK_RE.sub("", content))
    if found is None:
        return None
    return found.group(1).upper() == "CORRECT"


class LLMJudge:
    """Verdicts from an OpenAI-compatible chat model (temperature 0, a few tokens)."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        retries: int = 2,
        backoff_s: float = 1.0,
        transport: httpx.BaseTransport | None = None,
    ):
        if not model:
            raise ValueError("LLM judge: --judge-model is required (the model the endpoint serves)")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"LLM judge: --judge-url {base_url!r} is not an http(s) URL")
        key = api_key if api_key is not None else os.environ.get(key_env, "").strip()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.name = f"llm:{model}"
        self.retries, self.backoff_s = retries, backoff_s
        self._client = httpx.Client(timeout=timeout_s, headers=headers, transport=transport)

    def close(self) -> None:
        self._client.close()

    def verdict(self, question: str, golds: Sequence[str], prediction: str | None) -> Verdict:
        """Raises `JudgeError` when no verdict can be had (the caller decides on fallback)."""
        if prediction is None:
            return Verdict(False, "no answer")  # nothing to grade: no call
        payload = {
            "model": self.model,
            "messages": judge_messages(question, golds, prediction),
            "temperature": 0.0,
            "max_tokens": 16,
        }
        content = self._complete(payload, question)
        correct = parse_verdict(content)
        if correct is None:
            raise JudgeError(
                f"LLM judge {self.url} replied neither CORRECT nor INCORRECT for question "
                f"{question[:80]!r}: {content[:120]!r}"
            )
        return Verdict(correct, content.strip()[:200])

    def _complete(self, payload: dict, question: str) -> str:
        where = f"LLM judge {self.url} (question {question[:80]!r})"
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._client.post(self.url, json=payload)
            except httpx.HTTPError as err:
                if last:
                    raise JudgeError(f"{where}: request failed: {err!r}") from err
                time.sleep(self.backoff_s * 2**attempt)
                continue
            if response.status_code in _RETRY_STATUS and not last:
                time.sleep(self.backoff_s * 2**attempt)
                continue
            if response.status_code != 200:
                raise JudgeError(f"{where}: HTTP {response.status_code}: {response.text[:200]!r}")
            try:
                data = response.json()
                content = data["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError) as err:
                raise JudgeError(
                    f"{where}: body is not chat-completions JSON with "
                    f"choices[0].message.content: {response.text[:200]!r}"
                ) from err
            if not isinstance(content, str):
                raise JudgeError(f"{where}: message content is {type(content).__name__}, not text")
            return content
        raise AssertionError("unreachable")  # the loop returns or raises on its last attempt


def apply_judges(
    records: Sequence[EvalRecord],
    rule: RuleJudge,
    llm: LLMJudge | None = None,
    on_error: OnError = "fallback",
    concurrency: int = 4,
) -> None:
    """Set each record's rule verdict and, with `llm`, its LLM verdict (in place)."""
    if on_error not in ("fallback", "fail"):
        raise ValueError(f"judge on_error={on_error!r} must be 'fallback' or 'fail'")
    for record in records:
        record.correct_rule = rule.verdict(record.question, record.golds, record.prediction).correct
        record.judge, record.correct_judge, record.judge_note = "rule", None, ""
    if llm is None:
        return

    def one(record: EvalRecord) -> None:
        try:
            verdict = llm.verdict(record.question, record.golds, record.prediction)
        except JudgeError as err:
            if on_error == "fail":
                raise JudgeError(f"{err} (sample {record.sample_id})") from err
            record.judge, record.judge_note = "rule-fallback", str(err)
            return
        record.judge, record.correct_judge = llm.name, verdict.correct
        record.judge_note = verdict.note

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        list(pool.map(one, records))  # list(): re-raises the first JudgeError
    fallbacks = [r for r in records if r.judge == "rule-fallback"]
    if fallbacks:
        warnings.warn(
            f"LLM judge failed on {len(fallbacks)} of {len(records)} questions; their rule "
            f"verdicts are used instead (first error: {fallbacks[0].judge_note})",
            RuntimeWarning,
            stacklevel=2,
        )
