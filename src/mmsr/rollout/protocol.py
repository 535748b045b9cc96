"""The tag protocol between the policy and its search tools.

A model turn is reasoning, then exactly one action (tags of the released MMSearch-R1
checkpoints):

    <reason>...</reason>
    <search><img></search>              image search on the question image
    <text_search>a query</text_search>  text search
    <answer>a short answer</answer>     final answer, ends the trajectory

Tool results come back in a user turn as `<information>...</information>`; image-search
results carry one thumbnail image per hit.

Rules of a valid turn (everything else is an `invalid` action, never an exception):
- Only whitespace before `<reason>`, between `</reason>` and the action, inside
  `<search>` around `<img>`, and after the action's closing tag.
- The turn ends at the first end-of-turn marker (`<|im_end|>`, `<|endoftext|>`); text
  after it is not part of the turn (the engine stops generating there).
- Exactly one action; no tag inside `<reason>`, the query or the answer (no nesting);
  a non-empty query and answer; multi-line queries and answers are collapsed to one line.
- The model never writes `<information>`: only tool results may.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

if TYPE_CHECKING:
    from mmsr.search.types import SearchResult

ActionKind = Literal["image_search", "text_search", "answer", "invalid"]
SearchKind = Literal["image_search", "text_search"]

# Markers that end a model turn in ChatML (Qwen, SmolLM2); text after them is not the turn.
END_OF_TURN_MARKERS: tuple[str, ...] = ("<|im_end|>", "<|endoftext|>")
CHAT_TURN_START = "<|im_start|>"

# Every tag the protocol knows; any other `<...>` is plain text to the parser.
_TAG_RE = re.compile(r"</?(?:reason|search|text_search|answer|information)>|<img>")
_ACTION_OPEN = {"<search>": "image_search", "<text_search>": "text_search", "<answer>": "answer"}
_ACTION_CLOSE = {
    "image_search": "</search>",
    "text_search": "</text_search>",
    "answer": "</answer>",
}
_ACTION_TAG = {"image_search": "<search>", "text_search": "<text_search>", "answer": "<answer>"}
_SEARCH_ONLY_IMG = "<search> must contain only <img> (text queries go in <text_search>)"
_INFORMATION_RE = re.compile(r"<information>.*?</information>", re.DOTALL)

ACTION_HELP = (
    "<reason>...</reason> followed by exactly one of <search><img></search>, "
    "<text_search>query</text_search> or <answer>answer</answer>"
)


@dataclass(frozen=True)
class Action:
    """One parsed model turn."""

    kind: ActionKind
    reason: str = ""  # text inside <reason>, stripped
    query: str = ""  # text_search only: one line, inner whitespace collapsed
    answer: str = ""  # answer only: one line, inner whitespace collapsed
    error: str = ""  # invalid only: why the turn is not one valid action

    @property
    def is_valid(self) -> bool:
        return self.kind != "invalid"

    @property
    def is_search(self) -> bool:
        return self.kind in ("image_search", "text_search")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _excerpt(text: str, width: int = 40) -> str:
    flat = _one_line(text)
    return repr(flat if len(flat) <= width else flat[: width - 1] + "…")


def cut_at_end_of_turn(text: str) -> str:
    """The part of `text` before the first end-of-turn marker."""
    for marker in END_OF_TURN_MARKERS:
        index = text.find(marker)
        if index >= 0:
            text = text[:index]
    return text


def parse_action(text: str, *, require_reason: bool = True) -> Action:
    """Parse one model turn into an `Action`; any malformed turn becomes `kind="invalid"`.

    Never raises. With `require_reason=False` a bare action without `<reason>` is accepted.
    """
    if not isinstance(text, str):
        return _invalid(f"turn is not text (got {type(text).__name__})")
    return _parse_turn(cut_at_end_of_turn(text), require_reason)


def _invalid(error: str) -> Action:
    return Action("invalid", error=error)


def _parse_turn(text: str, require_reason: bool) -> Action:
    """Walks the tags in reading order; the first problem makes the turn invalid."""
    tags = list(_TAG_RE.finditer(text))
    if any("information" in tag.group() for tag in tags):
        return _invalid("the model wrote an <information> tag, which only tool results may contain")
    state = "start"  # start -> reason -> after_reason -> image_search|text_search|answer -> done
    kind: str = ""
    reason = content = ""
    seen_img = False
    end_of_previous = 0
    for tag in tags:
        name = tag.group()
        between = text[end_of_previous : tag.start()]
        end_of_previous = tag.end()
        if state == "start":
            if name == "<reason>":
                if between.strip():
                    return _invalid(f"text before <reason>: {_excerpt(between)}")
                state = "reason"
            elif name in _ACTION_OPEN and not require_reason:
                if between.strip():
                    return _invalid(f"text before {name}: {_excerpt(between)}")
                state = kind = _ACTION_OPEN[name]
            elif name in _ACTION_OPEN:
                return _invalid(f"missing <reason>...</reason> before {name}")
            else:
                return _invalid(f"unexpected {name} before <reason>")
        elif state == "reason":
            if name == "</reason>":
                reason, state = between, "after_reason"
            elif name in _ACTION_OPEN:
                return _invalid(f"action {name} inside <reason>; close </reason> first")
            else:
                return _invalid(f"{name} inside <reason>")
        elif state == "after_reason":
            if name in _ACTION_OPEN:
                if between.strip():
                    return _invalid(f"text between </reason> and {name}: {_excerpt(between)}")
                state = kind = _ACTION_OPEN[name]
            elif name == "<reason>":
                return _invalid("a second <reason> block; write one <reason> and then one action")
            else:
                return _invalid(f"unexpected {name} after </reason>")
        elif state == "image_search":
            if name == "<img>" and not seen_img:
                if between.strip():
                    return _invalid(_SEARCH_ONLY_IMG)
                seen_img = True
            elif name == "</search>":
                if not seen_img or between.strip():
                    return _invalid(_SEARCH_ONLY_IMG)
                state = "done"
            else:
                return _invalid(f"{name} nested inside <search>")
        elif state in ("text_search", "answer"):
            if name == _ACTION_CLOSE[state]:
                content, state = between, "done"
            else:
                return _invalid(f"{name} nested inside {_ACTION_TAG[state]}")
        else:  # done
            if name in _ACTION_OPEN:
                return _invalid(
                    f"two actions in one turn ({_ACTION_TAG[kind]} then {name}); "
                    "exactly one is allowed"
                )
            return _invalid(f"unexpected {name} after {_ACTION_CLOSE[kind]}")

    trailing = text[end_of_previous:]
    if state in ("start", "after_reason"):
        return _invalid(f"no action: expected {ACTION_HELP}")
    if state == "reason":
        return _invalid("<reason> is never closed and no action follows")
    if state != "done":
        return _invalid(f"{_ACTION_TAG[state]} is never closed (output cut off?)")
    if trailing.strip():
        return _invalid(f"text after {_ACTION_CLOSE[kind]}: {_excerpt(trailing)}")
    reason = reason.strip()
    if kind == "text_search":
        query = _one_line(content)
        if not query:
            return _invalid("empty <text_search> query")
        return Action("text_search", reason=reason, query=query)
    if kind == "answer":
        answer = _one_line(content)
        if not answer:
            return _invalid("empty <answer>")
        return Action("answer", reason=reason, answer=answer)
    return Action("image_search", reason=reason)


# ---------------------------------------------------------------------------------------
# Whole trajectories as text
# ---------------------------------------------------------------------------------------


def split_turns(solution_str: str) -> list[str]:
    """The model's turns in a trajectory's response text, tool results removed.

    Two layouts are understood:
    - ChatML with markers (`<|im_start|>role ... <|im_end|>`): assistant messages are the
      turns; the text before the first marker is the first assistant turn (a veRL response
      starts inside the assistant message opened by the prompt).
    - Plain text (decoded with special tokens skipped, or concatenated by hand): turns are
      the text between `<information>...</information>` blocks. The role lines `user` /
      `assistant` that such decoding leaves around a tool message are dropped, and so is the
      follow-up instruction after `</information>`, up to the `assistant` line or else up to
      the first protocol tag (our follow-up wording contains no tags for this reason); text
      after a tool message with neither is taken as all follow-up, not as a model turn.
      A model that writes a complete `<information>` block itself cannot be told apart
      from a tool in this layout; with markers it can.
    """
    if CHAT_TURN_START in solution_str:
        return _split_chatml(solution_str)
    return _split_plain(solution_str)


def _split_chatml(text: str) -> list[str]:
    segments = text.split(CHAT_TURN_START)
    turns = []
    if segments[0].strip():
        turns.append(cut_at_end_of_turn(segments[0]))
    for segment in segments[1:]:
        role, _, body = segment.partition("\n")
        if role.strip() == "assistant":
            turns.append(cut_at_end_of_turn(body))
    return turns


# `user` right before the tool message, on its own line or glued to the closing tag.
_TRAILING_USER_LINE = re.compile(r"(?<!\w)user\s*$")
_ASSISTANT_LINE = re.compile(r"(?:^|\n)[ \t]*assistant[ \t]*(?:\n|$)")


def _split_plain(text: str) -> list[str]:
    blocks = list(_INFORMATION_RE.finditer(text))
    pieces = []
    start = 0
    for block in blocks:
        pieces.append(text[start : block.start()])
        start = block.end()
    pieces.append(text[start:])
    turns = []
    for index, piece in enumerate(pieces):
        if index < len(pieces) - 1:  # a tool message follows: drop its `user` role line
            piece = _TRAILING_USER_LINE.sub("", piece)
        if index > 0:  # drop the follow-up instruction that came with the tool message
            assistant = _ASSISTANT_LINE.search(piece)
            if assistant:
                piece = piece[assistant.end() :]
            else:
                first_tag = _TAG_RE.search(piece)
                if first_tag is None:
                    # Only the follow-up, or untagged model text: the two cannot be told
                    # apart, and either way the trajectory has no further action.
                    continue
                piece = piece[first_tag.start() :]
        turns.append(piece)
    return turns


def parse_trajectory(solution_str: str, *, require_reason: bool = True) -> list[Action]:
    """`parse_action` over every model turn of a response text."""
    return [parse_action(turn, require_reason=require_reason) for turn in split_turns(solution_str)]


# ---------------------------------------------------------------------------------------
# Limits
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchLimits:
    """Budget of one trajectory (official defaults: 3 turns, 1 image + 2 text searches)."""

    max_turns: int = 3  # model turns, the final answer included
    max_image_search: int = 1  # image searches per trajectory
    max_text_search: int = 2  # text searches per trajectory

    def violation(self, kind: str, turn: int, n_image_used: int, n_text_used: int) -> str:
        """Why taking action `kind` at 1-based `turn` breaks the budget, or "" if it doesn't.

        A search on the last turn is a violation: its result could never be read.
        """
        if turn > self.max_turns:
            return f"turn {turn} is past the limit of {self.max_turns} turns"
        if kind == "image_search":
            if n_image_used >= self.max_image_search:
                return _over_limit("image search", n_image_used, self.max_image_search)
        elif kind == "text_search":
            if n_text_used >= self.max_text_search:
                return _over_limit("text search", n_text_used, self.max_text_search)
        else:
            return ""
        if turn == self.max_turns:
            return f"turn {turn} is the last turn, so it must answer instead of searching"
        return ""


def _over_limit(tool: str, used: int, limit: int) -> str:
    if limit == 0:
        return f"{tool} is not allowed"
    if used == 1 and limit == 1:
        return f"{tool} already used (limit: 1 per question)"
    return f"{tool} already used {used} times (limit: {limit} per question)"


class SequenceCheck(NamedTuple):
    valid: bool
    reason: str  # "" when valid, else the first problem, naming its turn


def check_sequence(actions: Sequence[Action], limits: SearchLimits | None = None) -> SequenceCheck:
    """Whether a trajectory is format-valid: every turn a valid action, searches within
    `limits`, and it ends with its only answer.

    Unlike the official format score, a second text search is accepted when the limits
    allow two.
    """
    limits = limits or SearchLimits()
    if not actions:
        return SequenceCheck(False, "no turns")
    n_image = n_text = 0
    for turn, action in enumerate(actions, start=1):
        if not action.is_valid:
            return SequenceCheck(False, f"turn {turn}: {action.error}")
        problem = limits.violation(action.kind, turn, n_image, n_text)
        if problem:
            return SequenceCheck(False, f"turn {turn}: {problem}")
        if action.kind == "answer":
            if turn < len(actions):
                return SequenceCheck(False, f"turn {turn} answered but more turns follow")
            return SequenceCheck(True, "")
        n_image += action.kind == "image_search"
        n_text += action.kind == "text_search"
    return SequenceCheck(False, f"ends without an answer (last action: {actions[-1].kind})")


# ---------------------------------------------------------------------------------------
# Observations: what the tools say back
# ---------------------------------------------------------------------------------------

IMAGE_PLACEHOLDER = "<image>"  # where `Observation.text()` puts a thumbnail by default


@dataclass(frozen=True)
class InfoItem:
    """One search hit as shown to the model."""

    title: str
    url: str = ""
    text: str = ""  # snippet (image search) or query-focused summary (text search)
    thumbnail: str | bytes | None = None  # local image path or encoded bytes; image search

    @classmethod
    def from_search_result(
        cls, result: SearchResult, thumbnail: str | bytes | None = None
    ) -> InfoItem:
        """From a tool's `SearchResult`; `thumbnail` is the resolved local image, if any
        (the result's own `thumbnail` may be a URL the engine has to fetch first)."""
        return cls(result.title, result.url, result.summary or result.snippet, thumbnail)


@dataclass(frozen=True)
class ImageSlot:
    """A place for one image inside an observation."""

    image: str | bytes  # local path or encoded bytes


@dataclass(frozen=True)
class Observation:
    """A user turn given back to the model: text and image slots in reading order."""

    parts: tuple[str | ImageSlot, ...]

    @property
    def images(self) -> list[str | bytes]:
        return [part.image for part in self.parts if isinstance(part, ImageSlot)]

    def text(self, image_placeholder: str = IMAGE_PLACEHOLDER) -> str:
        """The observation as one string, each image replaced by `image_placeholder`
        (e.g. Qwen's `<|vision_start|><|image_pad|><|vision_end|>`)."""
        return "".join(
            image_placeholder if isinstance(part, ImageSlot) else part for part in self.parts
        )

    def chat_content(self) -> list[dict[str, object]]:
        """HF chat-template content: [{"type": "text", ...}, {"type": "image", ...}, ...]."""
        return [
            {"type": "image", "image": part.image}
            if isinstance(part, ImageSlot)
            else {"type": "text", "text": part}
            for part in self.parts
        ]

    def __add__(self, other: Observation | str) -> Observation:
        extra = (other,) if isinstance(other, str) else other.parts
        return Observation(_merge_text(self.parts + extra))


def _merge_text(parts: tuple[str | ImageSlot, ...]) -> tuple[str | ImageSlot, ...]:
    merged: list[str | ImageSlot] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        elif not (isinstance(part, str) and not part):
            merged.append(part)
    return tuple(merged)


def neutralise_tags(text: str) -> str:
    """Escape protocol tags inside tool text, so a web page cannot close the
    `<information>` block or plant an action."""
    return _TAG_RE.sub(lambda tag: "&lt;" + tag.group()[1:], text)


def format_information(
    items: Sequence[InfoItem], kind: SearchKind, max_chars: int | None = None
) -> Observation:
    """Render search hits as an `<information>` block.

    Each hit: "[i] title", then its thumbnail (image search), its URL and its text, cut to
    `max_chars` characters when given.
    """
    parts: list[str | ImageSlot] = ["<information>\n"]
    if not items:
        tool = "Image" if kind == "image_search" else "Text"
        parts.append(f"{tool} search found no results.\n")
    for index, item in enumerate(items, start=1):
        parts.append(f"[{index}] {neutralise_tags(_one_line(item.title)) or '(untitled)'}\n")
        if kind == "image_search" and item.thumbnail:
            parts += [ImageSlot(item.thumbnail), "\n"]
        if item.url:
            parts.append(f"URL: {neutralise_tags(item.url)}\n")
        body = item.text.strip()
        if max_chars is not None and len(body) > max_chars:
            body = body[: max(max_chars - 1, 0)].rstrip() + "…"
        if body:
            parts.append(neutralise_tags(body) + "\n")
    parts.append("</information>")
    return Observation(_merge_text(tuple(parts)))


def invalid_action_observation(action: Action) -> Observation:
    """Feedback for a turn that is not one valid action."""
    message = f"Invalid turn: {action.error}. Write {ACTION_HELP}."
    return Observation((f"<information>\n{message}\n</information>",))


def limit_observation(problem: str) -> Observation:
    """Feedback for a search over budget (`problem` from `SearchLimits.violation`)."""
    message = f"Search refused: {problem}. Answer with what you know now."
    return Observation((f"<information>\n{message}\n</information>",))
