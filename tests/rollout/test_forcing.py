"""The forcers that let the model reason and then force the action (mmsr.rollout.forcing)."""

from __future__ import annotations

import pytest

from mmsr.rollout.engine import FREE_NO_STOP
from mmsr.rollout.forcing import IMAGE_SEARCH_ACTION, REASON_LIMIT, ForcedSearchForcer


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


def test_forced_rollouts_search_after_their_own_reasoning(tiny_policy):
    tokenizer = tiny_policy.tokenizer
    forcer = ForcedSearchForcer(tokenizer, rollouts=1, max_new_tokens=96)
    text, closed = play(forcer, tokenizer, 0, 0, 1, "It is Togo.</reason><answer>Lome</answer>")
    assert closed and text == "<reason>It is Togo.</reason><search><img></search>"
    # Other rollouts of the group, and the forced rollout's later turns, are the policy's own.
    assert play(forcer, tokenizer, 0, 1, 1, "x") == (None, False)
    assert play(forcer, tokenizer, 0, 0, 2, "x") == (None, False)
    # Each group's first rollout is forced.
    text, closed = play(forcer, tokenizer, 3, 0, 1, "Hmm.</reason>")
    assert closed and text.endswith("</reason><search><img></search>")


def test_reasoning_is_closed_so_that_the_search_fits_the_turn(tiny_policy):
    tokenizer = tiny_policy.tokenizer
    forcer = ForcedSearchForcer(tokenizer, rollouts=2, max_new_tokens=60)
    text, closed = play(forcer, tokenizer, 0, 1, 1, " word" * 200)
    assert closed and text.endswith("</reason><search><img></search>")
    assert len(tokenizer.encode(text, add_special_tokens=False)) + 1 <= 60
    # The default budget keeps the RAG workflow's reasoning limit; reset forgets the turns.
    wide = ForcedSearchForcer(tokenizer, rollouts=1, max_new_tokens=400)
    text, _ = play(wide, tokenizer, 0, 0, 1, " word" * 200)
    written = len(tokenizer.encode(text, add_special_tokens=False))
    assert written == REASON_LIMIT + wide.turn.overhead(IMAGE_SEARCH_ACTION)
    wide.reset()
    text, _ = play(wide, tokenizer, 0, 0, 1, "Short.</reason>")
    assert text == "<reason>Short.</reason><search><img></search>"
    with pytest.raises(ValueError, match="max_new_tokens 4 leaves no room"):
        ForcedSearchForcer(tokenizer, rollouts=1, max_new_tokens=4)
