"""The forcers that let the model reason and then force the action (mmsr.rollout.forcing)."""

from __future__ import annotations

import pytest

from mmsr.rollout.engine import FREE_NO_STOP
from mmsr.rollout.forcing import (
    ANSWER_ROOM,
    ANSWER_WORDS,
    FIRST_SENTENCE_LIMIT,
    IMAGE_SEARCH_ACTION,
    REASON_LIMIT,
    SEARCH_WORDS,
    DecisionForcer,
)


def play(forcer, tokenizer, group, sample_index, turn, model_text):
    """The turn as the engine builds it: forced tokens, else the model's own; returns the
    text and whether the forcer ended the turn (None: the forcer left the turn free)."""
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    mine = tokenizer.encode(model_text, add_special_tokens=False)
    emitted: list[int] = []
    while True:
        token = forcer(group, sample_index, turn, len(emitted), tokens=emitted)
        if token == end:
            return tokenizer.decode(emitted), True
        if token is None or token == FREE_NO_STOP:
            if token is None and not emitted:
                return None, False
            if not mine:
                return tokenizer.decode(emitted), False
            token = mine.pop(0)
        emitted.append(token)


def test_forced_rollouts_search_or_answer_after_their_own_reasoning(tiny_policy):
    tokenizer = tiny_policy.tokenizer
    forcer = DecisionForcer(tokenizer, search=1, answer=1, max_new_tokens=96)
    assert [forcer.decision(i) for i in range(3)] == ["image_search", "answer", None]
    text, closed = play(forcer, tokenizer, 0, 0, 1, "It is Togo.</reason><answer>Lome</answer>")
    assert closed and text == "<reason>It is Togo.</reason><search><img></search>"
    # The second rollout answers at once: <answer> is forced, the answer is the model's.
    text, closed = play(forcer, tokenizer, 0, 1, 1, "Togo.</reason>Lome</answer>")
    assert not closed and text == "<reason>Togo.</reason><answer>Lome</answer>"
    # Other rollouts of the group, and the forced rollouts' later turns, are the policy's.
    assert play(forcer, tokenizer, 0, 2, 1, "x") == (None, False)
    assert play(forcer, tokenizer, 0, 0, 2, "x") == (None, False)
    # Every group's first rollouts are forced.
    text, closed = play(forcer, tokenizer, 3, 0, 1, "Hmm.</reason>")
    assert closed and text.endswith("</reason><search><img></search>")


def test_reasoning_is_closed_so_that_the_search_fits_the_turn(tiny_policy):
    tokenizer = tiny_policy.tokenizer
    forcer = DecisionForcer(tokenizer, search=2, answer=0, max_new_tokens=60)
    text, closed = play(forcer, tokenizer, 0, 1, 1, " word" * 200)
    assert closed and text.endswith("</reason><search><img></search>")
    assert len(tokenizer.encode(text, add_special_tokens=False)) + 1 <= 60
    # The default budget keeps the RAG workflow's reasoning limit; reset forgets the turns.
    wide = DecisionForcer(tokenizer, search=1, answer=0, max_new_tokens=400)
    text, _ = play(wide, tokenizer, 0, 0, 1, " word" * 200)
    written = len(tokenizer.encode(text, add_special_tokens=False))
    assert written == REASON_LIMIT + wide.turn.overhead(IMAGE_SEARCH_ACTION)
    wide.reset()
    text, _ = play(wide, tokenizer, 0, 0, 1, "Short.</reason>")
    assert text == "<reason>Short.</reason><search><img></search>"
    # A forced answer keeps ANSWER_ROOM tokens for the model's answer.
    answering = DecisionForcer(tokenizer, search=0, answer=1, max_new_tokens=60)
    text, _ = play(answering, tokenizer, 0, 0, 1, " word" * 200)
    head = text[: text.index("</reason><answer>") + len("</reason><answer>")]
    assert len(tokenizer.encode(head, add_special_tokens=False)) + ANSWER_ROOM + 1 <= 60
    with pytest.raises(ValueError, match="max_new_tokens 4 leaves no room"):
        DecisionForcer(tokenizer, search=1, answer=0, max_new_tokens=4)


def test_forced_words_start_the_reasonings_second_sentence(tiny_policy):
    tokenizer = tiny_policy.tokenizer
    forcer = DecisionForcer(tokenizer, search=1, answer=1, max_new_tokens=160, at="reasoning")
    asks = "Capital? It asks."  # (the tiny tokenizer spells it letter by letter)
    text, closed = play(forcer, tokenizer, 0, 0, 1, asks + ", so I search.</reason>")
    assert not closed and text == f"<reason>{asks} {SEARCH_WORDS}, so I search.</reason>"
    text, _ = play(forcer, tokenizer, 0, 1, 1, asks + " Togo.</reason><answer>Lome</answer>")
    assert text == f"<reason>{asks} {ANSWER_WORDS} Togo.</reason><answer>Lome</answer>"
    # The free rollouts and later turns are the model's; a reasoning that writes a tag
    # before its first full stop is left alone.
    assert play(forcer, tokenizer, 0, 2, 1, "x") == (None, False)
    assert play(forcer, tokenizer, 0, 0, 2, "x") == (None, False)
    text, _ = play(forcer, tokenizer, 1, 0, 1, "Hmm</reason><answer>Lome</answer>")
    assert text == "<reason>Hmm</reason><answer>Lome</answer>"
    # Without a full stop the words come after FIRST_SENTENCE_LIMIT tokens; reset forgets.
    text, _ = play(forcer, tokenizer, 2, 0, 1, " word" * 100)
    said = (" word" * 100)[:FIRST_SENTENCE_LIMIT]  # a token a letter
    assert text.startswith(f"<reason>{said} {SEARCH_WORDS}")
    forcer.reset()
    text, _ = play(forcer, tokenizer, 2, 0, 1, "Short. x")
    assert text == f"<reason>Short. {SEARCH_WORDS} x"


def test_forced_words_need_a_known_place_and_room(tiny_policy):
    with pytest.raises(ValueError, match="forced decisions at 'answer'"):
        DecisionForcer(tiny_policy.tokenizer, search=1, answer=0, max_new_tokens=96, at="answer")
    with pytest.raises(ValueError, match="max_new_tokens 40 leaves no room"):
        DecisionForcer(tiny_policy.tokenizer, 1, 0, max_new_tokens=40, at="reasoning")
