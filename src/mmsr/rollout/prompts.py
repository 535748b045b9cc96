"""Our prompt wording: the first-turn instruction and the follow-ups after each tool.

The tags are those of the released MMSearch-R1 checkpoints (see `protocol`); the words are
our own. Follow-ups contain no protocol tags on purpose: when a response is decoded with
special tokens skipped and its `assistant` role line is missing, `protocol.split_turns`
takes the first tag after `</information>` as the start of the model's next turn.
"""

from __future__ import annotations

from collections.abc import Sequence

from mmsr.rollout.protocol import (
    InfoItem,
    Observation,
    SearchKind,
    SearchLimits,
    format_information,
)


def _times(n: int) -> str:
    return "once" if n == 1 else "twice" if n == 2 else f"{n} times"


def instruction(limits: SearchLimits | None = None) -> str:
    """How to use the tags and when to search, stated with the trajectory's budget."""
    limits = limits or SearchLimits()
    tools = []
    if limits.max_image_search > 0:
        tools.append(
            "- <search><img></search> finds web pages with pictures like this image; use it "
            "when you cannot tell what the image shows (at most "
            f"{_times(limits.max_image_search)}).\n"
        )
    if limits.max_text_search > 0:
        tools.append(
            "- <text_search>a short query</text_search> looks up facts on the web; use it "
            "when you know what the image shows but not the fact asked for (at most "
            f"{_times(limits.max_text_search)}).\n"
        )
    return (
        "Answer the question about the image. In every turn, first think inside "
        "<reason></reason>, then write exactly one action:\n"
        "- <answer>a short answer</answer> when you are sure; just the answer, no sentence.\n"
        + "".join(tools)
        + "Search only when what you see and know is not enough: a search lowers the reward "
        "of a correct answer. Results come back inside <information></information>; never "
        f"write that tag yourself. You have {limits.max_turns} turns and the last one must "
        "answer."
    )


def first_turn_text(question: str, limits: SearchLimits | None = None) -> str:
    """The user message of the first turn (the question image goes before it)."""
    return f"{instruction(limits)}\n\nQuestion: {question.strip()}"


def followup(kind: SearchKind, turns_left: int) -> str:
    """What we say after the results of a `kind` search; `turns_left` counts the next turn."""
    if kind == "image_search":
        text = (
            "These are pages whose pictures match the image. If they show what the image "
            "is, answer now; if you still need a fact about it, search the web with text."
        )
    else:
        text = (
            "These are the text search results. If they contain the answer, give it now; "
            "otherwise try one sharper query."
        )
    if turns_left <= 1:
        text += " This is your last turn: reason, then give your answer."
    else:
        text += " Reason first, then act, as before."
    return text


def tool_observation(
    kind: SearchKind,
    items: Sequence[InfoItem],
    turns_left: int,
    max_chars: int | None = None,
) -> Observation:
    """The whole user turn after a search: the `<information>` block, then the follow-up."""
    return format_information(items, kind, max_chars) + ("\n" + followup(kind, turns_left))
