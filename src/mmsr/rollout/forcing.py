"""Token forcers that let the model reason and then force the turn's action.

The engine asks a forcer for each token (`mmsr.rollout.engine.TokenForcer`); a forced
token is recorded with the policy's own log-prob of it, so forced trajectories are ordinary
trajectories. Two users:

- the RAG workflow with the model's own reasoning (`mmsr.eval.modes.ModelReasoningRagForcer`):
  every turn's action is the workflow's;
- GRPO's decision exploration (`DecisionForcer`): in every group some rollouts make an
  image search in their first turn and some answer at once, whatever the policy would
  have chosen, so that every group holds both decisions and its advantages say, for that
  question, whether searching paid (with four free rollouts a group usually makes one
  decision only, and the decision then drifts with the draws: docs/RESULTS.md, stops
  28-30). The decision is forced either as the action after the model's reasoning
  (`at="action"`), or where nano's SFT scripts make it, at the start of the reasoning's
  second sentence (`at="reasoning"`, `WordsAfterFirstSentence`): "I cannot tell which flag
  this is" against "This is the flag of", the rest of the turn being the model's own.
"""

from __future__ import annotations

from collections.abc import Sequence

REASON_OPEN, REASON_CLOSE = "<reason>", "</reason>"
REASON_LIMIT = 64  # model reasoning tokens before the forcer closes the reasoning
IMAGE_SEARCH_ACTION = "<search><img></search>"
ANSWER_ACTION = "<answer>"
ANSWER_ROOM = 16  # tokens left for a forced-open answer (nano's answers: a few words)
# Where the SFT scripts decide (`mmsr.train.sft.plan_turns`): the reasoning's first sentence
# says what the question asks for, the second starts with one of these.
SEARCH_WORDS = "I cannot tell which flag this is"
ANSWER_WORDS = "This is the flag of"  # `mmsr.train.align.NAMING`
FIRST_SENTENCE_LIMIT = 32  # reasoning tokens before the words are forced anyway
FORCED_AT = ("action", "reasoning")


class ForcedInTurn:
    """A turn that opens `<reason>` and has one run of tokens forced somewhere after it;
    remembers, per (group, sample, turn), where that run starts and its tokens (None: the
    turn was left alone) until `reset`."""

    def __init__(self, tokenizer):
        from mmsr.rollout.engine import FREE_NO_STOP

        self.tokenizer = tokenizer
        self.free_no_stop = FREE_NO_STOP
        self.open = self.encode(REASON_OPEN)
        self._placed: dict[tuple[int, int, int], tuple[int, list[int]] | None] = {}

    def reset(self) -> None:
        self._placed.clear()

    def placed(self, key: tuple[int, int, int]) -> tuple[int, list[int]] | None:
        """Where turn `key`'s run was forced: (step, its tokens); None if it was not (yet,
        or the turn was left alone)."""
        return self._placed.get(key)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)


class ReasonThenAction(ForcedInTurn):
    """One turn as `<reason>` + the model's reasoning + a forced action: the model may not
    end the turn while reasoning; once it writes `</reason>` (or after `reason_limit`
    tokens, when the forcer closes it) the action's tokens follow."""

    def __init__(self, tokenizer, reason_limit: int = REASON_LIMIT):
        super().__init__(tokenizer)
        self.reason_limit = reason_limit
        self.close = self.encode(REASON_CLOSE)

    def overhead(self, action: str) -> int:
        """Tokens of the turn besides the reasoning: the tags and the action."""
        return len(self.open) + len(self.close) + len(self.encode(action))

    def token(
        self, key: tuple[int, int, int], action: str, step: int, tokens: Sequence[int]
    ) -> int | None:
        """The token to force at `step` of the turn `key` (`tokens`: the turn's so far);
        None once the action has been written (the caller decides what follows)."""
        if step < len(self.open):
            return self.open[step]
        if key not in self._placed:
            reasoning = self.tokenizer.decode(list(tokens[len(self.open) : step]))
            if REASON_CLOSE in reasoning:
                # A token may run past the close ("><"): force only the rest of the action.
                after = reasoning.split(REASON_CLOSE, 1)[1]
                rest = action[len(after) :] if action.startswith(after) else action
                self._placed[key] = (step, self.encode(rest))
            elif step - len(self.open) >= self.reason_limit:
                self._placed[key] = (step, self.encode(REASON_CLOSE + action))
            else:
                return self.free_no_stop
        start, forced = self._placed[key]
        if step < start + len(forced):
            return forced[step - start]
        return None

    def after_action(self, key: tuple[int, int, int], step: int) -> int:
        """Tokens the model has written after turn `key`'s forced action, at `step` (only
        once `token` has returned None for that turn)."""
        start, forced = self._placed[key]
        return step - start - len(forced)


class WordsAfterFirstSentence(ForcedInTurn):
    """One turn as `<reason>` + the model's first sentence + forced words; the rest of the
    turn (reasoning, action) is the model's. The model may not end the turn before the
    words; they follow the first sentence's full stop, or `FIRST_SENTENCE_LIMIT` tokens.
    A model that writes a tag before its first full stop is left alone (it did not reason
    as the scripts do: forcing words then would land outside the reasoning)."""

    def overhead(self, words: str) -> int:
        return len(self.open) + FIRST_SENTENCE_LIMIT + len(self.encode(" " + words))

    def token(
        self, key: tuple[int, int, int], words: str, step: int, tokens: Sequence[int]
    ) -> int | None:
        """The token to force at `step` of the turn `key`; None where the model is free."""
        if step < len(self.open):
            return self.open[step]
        if key not in self._placed:
            said = self.tokenizer.decode(list(tokens[len(self.open) : step]))
            if "<" in said:
                self._placed[key] = None
            elif said.rstrip().endswith(".") or step - len(self.open) >= FIRST_SENTENCE_LIMIT:
                spaced = words if said.endswith((" ", "\n")) else " " + words
                self._placed[key] = (step, self.encode(spaced))
            else:
                return self.free_no_stop
        placed = self._placed[key]
        if placed is None:
            return None
        start, forced = placed
        return forced[step - start] if step < start + len(forced) else None


class DecisionForcer:
    """GRPO's decision exploration: in every group, rollouts with `sample_index < search`
    reason freely and then make an image search in their first turn, the next `answer`
    ones reason and then open `<answer>` (the model writes the answer, in at most
    `ANSWER_ROOM` tokens before the turn's budget ends). With `at="reasoning"` they start
    their reasoning's second sentence with `SEARCH_WORDS` / `ANSWER_WORDS` instead, and
    write the rest of the turn themselves. Every later turn, and every other rollout, is
    the policy's own. The engine calls `reset` before each rollout."""

    reads_tokens = True

    def __init__(
        self, tokenizer, search: int, answer: int, max_new_tokens: int, at: str = "action"
    ):
        if at not in FORCED_AT:
            raise ValueError(f"forced decisions at {at!r}: choose one of {FORCED_AT}")
        self.search, self.answer, self.at = search, answer, at
        self.end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.words = WordsAfterFirstSentence(tokenizer)
        self.turn = ReasonThenAction(tokenizer)
        if at == "reasoning":
            needed = max(self.words.overhead(SEARCH_WORDS), self.words.overhead(ANSWER_WORDS))
            if needed + ANSWER_ROOM >= max_new_tokens:
                raise ValueError(
                    f"max_new_tokens {max_new_tokens} leaves no room to finish the turn after "
                    f"forced words ({needed + ANSWER_ROOM + 1} tokens needed)"
                )
            return
        # Reasoning is closed early enough that the longest forced action, the answer's
        # room and <|im_end|> fit the turn.
        needed = max(
            self.turn.overhead(IMAGE_SEARCH_ACTION) if search else 0,
            self.turn.overhead(ANSWER_ACTION) + ANSWER_ROOM if answer else 0,
        )
        room = max_new_tokens - needed - 1
        if room < 1:
            raise ValueError(
                f"max_new_tokens {max_new_tokens} leaves no room to reason before a forced "
                f"decision ({needed + 2} tokens needed)"
            )
        self.turn.reason_limit = min(REASON_LIMIT, room)

    def reset(self) -> None:
        self.turn.reset()
        self.words.reset()

    def decision(self, sample_index: int) -> str | None:
        """'image_search', 'answer', or None (the policy's own) for a group's rollout."""
        if sample_index < self.search:
            return "image_search"
        if sample_index < self.search + self.answer:
            return "answer"
        return None

    def __call__(
        self, group: int, sample_index: int, turn: int, step: int, tokens: Sequence[int] = ()
    ) -> int | None:
        decision = self.decision(sample_index)
        if turn != 1 or decision is None:
            return None
        key = (group, sample_index, turn)
        if self.at == "reasoning":
            words = SEARCH_WORDS if decision == "image_search" else ANSWER_WORDS
            return self.words.token(key, words, step, tokens)
        action = IMAGE_SEARCH_ACTION if decision == "image_search" else ANSWER_ACTION
        forced = self.turn.token(key, action, step, tokens)
        if forced is not None or decision == "answer":
            return forced  # the model writes the answer itself
        return self.end_of_turn  # the search action is the whole rest of the turn
