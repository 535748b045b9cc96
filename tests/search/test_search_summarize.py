"""Extractive and LLM summarisers."""

from __future__ import annotations

import json

import pytest

from mmsr.search.errors import BackendUnavailable, MalformedResponse
from mmsr.search.summarize import (
    ExtractiveSummarizer,
    LLMSummarizer,
    split_sentences,
    terms,
)

from .conftest import Reply

PAGE = """France — Overview
France is a country in Western Europe. It has many regions.
Capital: Paris
Population: 68,521,974 (2024 est.)
The national flag is a vertical tricolour of blue, white and red. The flag dates from 1794.
Official language: French
Currency: euro (EUR)"""


def test_sentence_split_and_terms():
    assert split_sentences("One here. Two there!\nThree: x") == [
        "One here.",
        "Two there!",
        "Three: x",
    ]
    assert terms("The Flags of France's regions") == ["the", "flag", "of", "france", "s", "region"]


def test_extractive_picks_query_sentences():
    summary = ExtractiveSummarizer(max_chars=120).summarize("What is the capital of France?", PAGE)
    assert "Capital: Paris" in summary
    summary = ExtractiveSummarizer(max_chars=200).summarize("flag colours and year", PAGE)
    assert "The national flag" in summary and "1794" in summary
    assert "Currency" not in summary


def test_extractive_page_order_and_cap():
    summarizer = ExtractiveSummarizer(max_chars=100, order="page")
    summary = summarizer.summarize("population currency", PAGE)
    assert len(summary) <= 100
    assert summary.index("Population") < summary.index("Currency")


def test_extractive_relevance_order_leads_with_the_best_sentence():
    # "euro" matches only the currency line, "population" only the population line; the
    # currency line also matches "currency": it scores best and comes first.
    summary = ExtractiveSummarizer(max_chars=100).summarize("population currency euro", PAGE)
    assert summary.startswith("Currency: euro (EUR)")
    assert "Population" in summary
    paged = ExtractiveSummarizer(max_chars=100, order="page")
    assert paged.summarize("population currency euro", PAGE).startswith("Population")


def test_extractive_order_is_checked_and_part_of_the_cache_id():
    with pytest.raises(ValueError, match="order='shuffled'"):
        ExtractiveSummarizer(order="shuffled")
    assert ExtractiveSummarizer().cache_id != ExtractiveSummarizer(order="page").cache_id


def test_extractive_rare_terms_outweigh_common_ones():
    text = "France is large. France is old. France borders Spain. Paris is in France."
    summary = ExtractiveSummarizer(max_chars=25).summarize("France Spain", text)
    assert summary == "France borders Spain."


def test_extractive_without_overlap_returns_the_opening():
    summary = ExtractiveSummarizer(max_chars=60).summarize("zebra quantum", PAGE)
    assert summary.startswith("France — Overview")
    assert ExtractiveSummarizer().summarize("anything", "") == ""


def test_extractive_cuts_one_long_sentence_at_a_word():
    long = "Capital " + "word " * 200 + "end."
    summary = ExtractiveSummarizer(max_chars=50).summarize("capital", long)
    assert len(summary) <= 50 and summary.endswith("…")


def chat_reply(content):
    return Reply(
        200,
        {
            "id": "x",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
        },
    )


def test_llm_summarizer_sends_our_prompt_and_parses(fake_http, monkeypatch):
    monkeypatch.setenv("MY_LLM_KEY", "sk-test")
    fake_http.route("/v1/chat/completions", chat_reply("<think>hmm</think> Paris is the capital."))
    llm = LLMSummarizer(base_url=f"{fake_http.url}/v1", model="qwen", key_env="MY_LLM_KEY")
    assert llm.summarize("capital of France", PAGE, title="France") == "Paris is the capital."
    seen = fake_http.requests[-1]
    assert seen.headers["authorization"] == "Bearer sk-test"
    payload = json.loads(seen.body)
    assert payload["model"] == "qwen" and payload["temperature"] == 0.0
    system, user = payload["messages"]
    assert "only the page text" in system["content"]
    assert "capital of France" in user["content"] and "Population: 68,521,974" in user["content"]


def test_llm_no_information_means_empty_summary(fake_http):
    fake_http.route("/v1/chat/completions", chat_reply("NO RELEVANT INFORMATION."))
    llm = LLMSummarizer(base_url=f"{fake_http.url}/v1", model="m", api_key="")
    assert llm.summarize("q", "text") == ""


def test_llm_failures_are_typed(fake_http):
    llm = LLMSummarizer(base_url=f"{fake_http.url}/v1", model="m", api_key="")
    fake_http.route("/v1/chat/completions", Reply(500, {"error": {"message": "CUDA OOM"}}))
    with pytest.raises(BackendUnavailable, match="CUDA OOM"):
        llm.summarize("q", "text")
    fake_http.route("/v1/chat/completions", Reply(200, {"choices": []}))
    with pytest.raises(MalformedResponse, match="choices"):
        llm.summarize("q", "text")
    with pytest.raises(ValueError, match="llm_model"):
        LLMSummarizer(base_url="http://x/v1", model="")


FIELDS_PAGE = """Country name:
- conventional long form: Pitcairn, Henderson, Ducie, and Oeno Islands
- conventional short form: Pitcairn Islands

Capital:
- name: Adamstown
- etymology: named after John ADAMS, who settled on Pitcairn Island in 1790

A long line of prose that introduces what follows and happens to end with a colon, like this:
- an item"""


def test_split_joins_a_bare_label_to_its_first_value_line():
    joined = split_sentences(FIELDS_PAGE, join_labels=True)
    assert "Capital: - name: Adamstown" in joined
    assert "- etymology: named after John ADAMS, who settled on Pitcairn Island in 1790" in joined
    assert (
        "Country name: - conventional long form: Pitcairn, Henderson, Ducie, and Oeno Islands"
        in (joined)
    )
    # Prose ending in a colon is not a label; without the option every line stays alone.
    assert "- an item" in joined
    assert "Capital:" in split_sentences(FIELDS_PAGE)
    assert "Capital: - name: Adamstown" not in split_sentences(FIELDS_PAGE)


def test_extractive_shows_a_label_with_its_value():
    # Alone, "Capital:" matches the query best and shows no fact, while "- name: Adamstown"
    # matches no query word: the summary led with the label and left the capital out.
    query = "Pitcairn Islands capital"
    apart = ExtractiveSummarizer(max_chars=150, join_labels=False).summarize(query, FIELDS_PAGE)
    assert apart.startswith("Capital: -") and "Adamstown" not in apart
    joined = ExtractiveSummarizer(max_chars=150).summarize(query, FIELDS_PAGE)
    assert joined.startswith("Capital: - name: Adamstown")
    assert ExtractiveSummarizer().cache_id != ExtractiveSummarizer(join_labels=False).cache_id
