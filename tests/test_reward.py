"""The reward, checked against hand-computed numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmsr.reward import (
    RewardConfig,
    answer_matches,
    compute_score,
    gold_answers,
    normalize_answer,
    score_trajectory,
)
from mmsr.rollout.protocol import Action

IMG = Action("image_search")
TXT = Action("text_search", query="q")
BAD = Action("invalid", error="no action")


def ans(text: str) -> Action:
    return Action("answer", answer=text)


# A row of FVQA's `reward_model` column as stored in its parquet files.
FVQA_GOLD = {
    "ground_truth": "Spain",
    "candidate_answers": json.dumps(["Kingdom of Spain", "ESP", "ES", "Spain"]),
    "style": "rule",
}


def turn(action: str) -> str:
    return f"<reason>thinking</reason>\n{action}"


def response(*turns: str) -> str:
    """Model turns joined by tool messages, as veRL decodes them without special tokens."""
    info = "\nuser\n<information>\n[1] A page\nSome text.\n</information>\nGo on.\nassistant\n"
    return info.join(turns)


# --- each branch of the reward --------------------------------------------------------


def test_correct_without_search_scores_one():
    result = score_trajectory([ans("Spain")], "Spain")
    assert result.score == pytest.approx(0.9 * 1.0 * 1.0 + 0.1 * 1.0)  # 1.0
    assert (result.acc, result.format, result.search_multiplier) == (1.0, 1.0, 1.0)


def test_correct_with_search_scores_0_91():
    result = score_trajectory([IMG, ans("Spain")], "Spain")
    assert result.score == pytest.approx(0.9 * 1.0 * 0.9 + 0.1 * 1.0)  # 0.91
    assert result.score == pytest.approx(0.91)
    assert result.search_multiplier == pytest.approx(0.9)


def test_penalty_applies_once_for_any_number_of_searches_by_default():
    result = score_trajectory([IMG, TXT, ans("Spain")], "Spain")
    assert result.score == pytest.approx(0.91)
    assert (result.n_image_search, result.n_text_search, result.n_turns) == (1, 1, 3)


def test_wrong_answer_with_good_format_scores_alpha():
    assert score_trajectory([ans("France")], "Spain").score == pytest.approx(0.1)
    assert score_trajectory([TXT, ans("France")], "Spain").score == pytest.approx(0.1)


def test_invalid_format_scores_no_format_term():
    result = score_trajectory([BAD], "Spain")
    assert (result.score, result.format, result.acc) == (0.0, 0.0, 0.0)
    assert result.format_reason == "turn 1: no action"


def test_over_limit_trajectory_keeps_accuracy_but_loses_format():
    actions = [TXT, TXT, TXT, ans("Spain")]
    result = score_trajectory(actions, "Spain")
    assert result.format == 0.0 and result.acc == 1.0
    assert result.score == pytest.approx(0.9 * 0.9)  # 0.81
    assert "text search already used 2 times" in result.format_reason
    strict = score_trajectory(actions, "Spain", RewardConfig(acc_requires_format=True))
    assert strict.score == 0.0 and strict.acc == 0.0


def test_two_text_searches_earn_the_format_score():
    result = score_trajectory([TXT, TXT, ans("Spain")], "Spain")
    assert result.format == 1.0
    assert result.score == pytest.approx(0.91)


def test_compounding_penalty():
    config = RewardConfig(compound_penalty=True)
    assert score_trajectory([ans("Spain")], "Spain", config).score == pytest.approx(1.0)
    assert score_trajectory([IMG, ans("Spain")], "Spain", config).score == pytest.approx(0.91)
    two = score_trajectory([IMG, TXT, ans("Spain")], "Spain", config)
    assert two.search_multiplier == pytest.approx(0.81)
    assert two.score == pytest.approx(0.9 * 0.81 + 0.1)  # 0.829


def test_penalty_warm_up_is_linear_in_the_step():
    config = RewardConfig(penalty_warmup_steps=100)
    actions = [IMG, ans("Spain")]
    assert score_trajectory(actions, "Spain", config, step=0).score == pytest.approx(1.0)
    # step 50: penalty 0.05 -> 0.9 * 0.95 + 0.1 = 0.955
    assert score_trajectory(actions, "Spain", config, step=50).score == pytest.approx(0.955)
    assert score_trajectory(actions, "Spain", config, step=100).score == pytest.approx(0.91)
    assert score_trajectory(actions, "Spain", config, step=500).score == pytest.approx(0.91)
    with pytest.raises(ValueError, match="penalty_warmup_steps=100 needs the training step"):
        score_trajectory(actions, "Spain", config)


def test_custom_weights():
    config = RewardConfig(alpha=0.2, search_penalty=0.5)
    assert score_trajectory([TXT, ans("Spain")], "Spain", config).score == pytest.approx(0.6)


def test_abstention_phrase_scored_as_configured():
    default = score_trajectory([ans("I don't know.")], "Spain")
    assert default.abstained and default.score == pytest.approx(0.1)
    config = RewardConfig(abstention_phrases=["not sure"], abstention_score=0.5)
    result = score_trajectory([TXT, ans("Not sure")], "Spain", config)
    assert result.abstained and result.acc == 0.0
    assert result.score == pytest.approx(0.9 * 0.5 * 0.9 + 0.1)  # 0.505
    assert not score_trajectory([ans("I don't know")], "Spain", config).abstained


def test_no_final_answer_scores_zero():
    result = score_trajectory([IMG, TXT], "Spain")
    assert (result.score, result.answer) == (0.0, "")
    assert score_trajectory([], "Spain").score == 0.0


# --- accuracy -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("The Eiffel Tower", "eiffel tower"),
        ("  an   APPLE!! ", "apple"),
        ("U.S.", "us"),
        ("1,000", "1000"),
        ("Guinea-Bissau", "guinea bissau"),
        ("Saint Martin / Sint Maarten", "saint martin sint maarten"),
        ("«Théâtre»", "théâtre"),
        ("Theatre", "theatre"),  # "the" only goes as a whole word
        ("A.D. 1066", "ad 1066"),
        ("I don’t know", "i dont know"),
        ("ＴＯＫＹＯ", "tokyo"),  # full-width forms unified
    ],
)
def test_normalize_answer(text, normalised):
    assert normalize_answer(text) == normalised


def test_accent_folding_is_an_option():
    assert normalize_answer("Bogotá") == "bogotá"
    assert normalize_answer("Bogotá", fold_accents=True) == "bogota"
    assert not answer_matches("Bogota", ["Bogotá"], RewardConfig())
    assert answer_matches("Bogota", ["Bogotá"], RewardConfig(fold_accents=True))


def test_exact_match_against_aliases():
    golds = gold_answers(FVQA_GOLD)
    config = RewardConfig()
    assert answer_matches("the Kingdom of Spain.", golds, config)
    assert answer_matches("es", golds, config)
    assert not answer_matches("Spain, in Europe", golds, config)


def test_subem_needs_whole_words():
    config = RewardConfig(match="subem")
    assert answer_matches("It is the Kingdom of Spain, in Europe", ["Spain"], config)
    assert not answer_matches("Russia", ["US"], config)
    assert not answer_matches("Spain, in Europe", ["Spain"], RewardConfig())


def test_numeric_tolerance():
    config = RewardConfig(numeric_tolerance=0.01)
    assert answer_matches("about 1,005 metres", ["1000"], config)
    assert not answer_matches("about 1,011 metres", ["1000"], config)
    assert not answer_matches("1005 or 1006", ["1000"], config)  # two numbers: ambiguous
    assert not answer_matches("1005", ["1000"], RewardConfig())
    assert answer_matches("12.5%", ["12.5"], RewardConfig(numeric_tolerance=0.0))
    assert not answer_matches("2020", ["The year"], config)


def test_gold_of_only_stop_words_never_matches():
    assert not answer_matches("", ["The"], RewardConfig(match="subem"))


# --- ground truth forms ---------------------------------------------------------------


def test_gold_answers_forms():
    assert gold_answers("Spain") == ["Spain"]
    assert gold_answers(["Spain", "ES", "Spain", " "]) == ["Spain", "ES"]
    assert gold_answers(np.array(["Spain", "ES"], dtype=object)) == ["Spain", "ES"]
    assert gold_answers(FVQA_GOLD) == ["Spain", "Kingdom of Spain", "ESP", "ES"]
    assert gold_answers({"target": ["a", "b"]}) == ["a", "b"]
    assert gold_answers({"ground_truth": "x", "candidate_answers": ["y"]}) == ["x", "y"]
    assert gold_answers(1066) == ["1066"]


@pytest.mark.parametrize(
    ("ground_truth", "message"),
    [
        ({"style": "rule"}, "none of the keys"),
        ({"ground_truth": "x", "candidate_answers": "not json"}, "candidate_answers is not"),
        ("  ", "no non-empty answer"),
        ([{"a": 1}], "non-text answer"),
        (None, "must be text"),
    ],
)
def test_bad_ground_truth_is_named(ground_truth, message):
    with pytest.raises(ValueError, match=message):
        gold_answers(ground_truth)


# --- the veRL entry point -------------------------------------------------------------


def test_compute_score_on_a_whole_response_with_fvqa_ground_truth():
    text = response(
        turn("<search><img></search>"),
        turn("<text_search>capital of\nthis country</text_search>"),
        turn("<answer>Kingdom of Spain</answer>"),
    )
    scores = compute_score("mmsearch_r1/fvqa_train", text, FVQA_GOLD)
    assert scores == {
        "score": pytest.approx(0.91),
        "acc": 1.0,
        "format": 1.0,
        "n_image_search": 1,
        "n_text_search": 1,
        "n_search": 2,
        "n_turns": 3,
        "search_multiplier": pytest.approx(0.9),
        "abstained": 0.0,
    }
    assert all(isinstance(v, (int, float)) for v in scores.values())


def test_compute_score_chatml_response():
    text = (
        "<reason>A red and yellow flag.</reason>\n<answer>Spain</answer><|im_end|>"
        "<|endoftext|><|endoftext|>"
    )
    assert compute_score("world/flag", text, "Spain")["score"] == pytest.approx(1.0)


def test_compute_score_two_text_searches_valid_three_invalid():
    two = response(
        turn("<text_search>a</text_search>"),
        turn("<text_search>b</text_search>"),
        turn("<answer>Spain</answer>"),
    )
    assert compute_score("s", two, "Spain")["format"] == 1.0
    three = response(
        turn("<text_search>a</text_search>"),
        turn("<text_search>b</text_search>"),
        turn("<text_search>c</text_search>"),
        turn("<answer>Spain</answer>"),
    )
    scores = compute_score("s", three, "Spain")
    assert (scores["format"], scores["n_text_search"]) == (0.0, 3)
    assert scores["score"] == pytest.approx(0.81)


def test_compute_score_invalid_turn():
    text = response(turn("<text_search>a</text_search><answer>Spain</answer>"))
    scores = compute_score("s", text, "Spain")
    assert (scores["score"], scores["format"], scores["acc"]) == (0.0, 0.0, 0.0)


def test_compute_score_config_overrides():
    text = response(turn("<search><img></search>"), turn("<answer>Spain</answer>"))
    extra = {"reward_config": {"search_penalty": 0.5}, "index": 7}
    assert compute_score("s", text, "Spain", extra)["score"] == pytest.approx(0.55)
    # keyword options (veRL reward_kwargs) win over extra_info
    assert compute_score("s", text, "Spain", extra, search_penalty=0.0)["score"] == 1.0
    warm = {"reward_config": {"penalty_warmup_steps": 10}, "step": 5}
    assert compute_score("s", text, "Spain", warm)["score"] == pytest.approx(0.9 * 0.95 + 0.1)
    with pytest.raises(ValueError, match=r"unknown reward option\(s\) \['penalty'\]"):
        compute_score("s", text, "Spain", penalty=0.2)


def test_config_validation_names_the_option():
    with pytest.raises(ValueError, match="alpha=1.5"):
        RewardConfig(alpha=1.5)
    with pytest.raises(ValueError, match="match='f1'"):
        RewardConfig(match="f1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_text_search=-1"):
        RewardConfig(max_text_search=-1)
    config = RewardConfig.from_dict({"abstention_phrases": "no idea"})
    assert config.abstention_phrases == ("no idea",)
    assert RewardConfig.from_dict(config.to_dict()) == config
