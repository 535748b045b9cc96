"""The reward of MMSearch-R1 (paper, Sec. 3.2), outcome-based and rule-based:

    reward = (1 - alpha) * Acc * SearchPenalty + alpha * Format

- Acc: 1 if the final answer matches the gold answer or one of its aliases after
  normalisation (exact match; SubEM and numeric tolerance as options), else 0. An answer
  equal to a configured abstention phrase scores `abstention_score` instead of 0.
- SearchPenalty: 1 - penalty if the trajectory searched at all, else 1 (so a correct
  answer found by searching earns 0.9 before the format term, which teaches the model to
  search only past the edge of its knowledge). Options: (1 - penalty)^n_searches, and a
  linear warm-up of the penalty over the first training steps.
- Format: 1 if every turn is one valid action, searches stay within the limits and the
  trajectory ends with its answer (`protocol.check_sequence`). Deviation from the
  official code: a second text search is format-valid when the limits allow two.

`compute_score` is the veRL entry point; `score_trajectory` scores already parsed turns
(the rollout engine has them). No tools, no models: pure Python, safe in reward workers.
"""

from __future__ import annotations

import json
import math
import re
import string
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from mmsr.rollout.protocol import Action, SearchLimits, check_sequence, parse_trajectory

MatchMode = Literal["em", "subem"]


@dataclass
class RewardConfig:
    """Every knob of the reward; defaults are those of the official training script."""

    alpha: float = 0.1
    """Weight of the format term; the accuracy term gets 1 - alpha."""
    search_penalty: float = 0.1
    """Fraction of the accuracy term lost by a trajectory that searched."""
    compound_penalty: bool = False
    """Apply the penalty once per search, (1 - penalty)^n, instead of once if any search."""
    penalty_warmup_steps: int = 0
    """Ramp the penalty linearly from 0 at step 0 to its full value at this step (0: off);
    needs the training step (`step=` or `extra_info["step"]`)."""
    match: MatchMode = "em"
    """"em": normalised prediction equals a gold answer; "subem": a normalised gold answer
    appears in the normalised prediction as whole words."""
    fold_accents: bool = False
    """Also strip accents when normalising ("Bogotá" matches "Bogota")."""
    numeric_tolerance: float | None = None
    """If set, a gold answer that is a number also matches a prediction holding exactly one
    number within this relative tolerance (0.01 = 1 %)."""
    abstention_phrases: tuple[str, ...] = ("I don't know",)
    """Answers that abstain, compared after normalisation."""
    abstention_score: float = 0.0
    """Acc given to an abstaining answer that is not correct (0: same as wrong)."""
    max_turns: int = 3
    """Model turns per trajectory, the answer included."""
    max_image_search: int = 1
    """Image searches allowed per trajectory."""
    max_text_search: int = 2
    """Text searches allowed per trajectory."""
    require_reason: bool = True
    """A turn without <reason>...</reason> before its action is a format failure."""
    acc_requires_format: bool = False
    """Give no accuracy credit to a format-invalid trajectory (official: credit it)."""

    def __post_init__(self) -> None:
        if isinstance(self.abstention_phrases, str):
            self.abstention_phrases = (self.abstention_phrases,)
        self.abstention_phrases = tuple(self.abstention_phrases)
        for name in ("alpha", "search_penalty"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"reward option {name}={value!r} must lie in [0, 1]")
        if self.match not in ("em", "subem"):
            raise ValueError(f"reward option match={self.match!r} must be 'em' or 'subem'")
        if self.numeric_tolerance is not None and self.numeric_tolerance < 0:
            raise ValueError(f"reward option numeric_tolerance={self.numeric_tolerance!r} < 0")
        for name in ("penalty_warmup_steps", "max_turns", "max_image_search", "max_text_search"):
            if getattr(self, name) < 0:
                raise ValueError(f"reward option {name}={getattr(self, name)!r} must be >= 0")

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> RewardConfig:
        """Build from a mapping (YAML, veRL `reward_kwargs`); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown reward option(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(options))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def limits(self) -> SearchLimits:
        return SearchLimits(self.max_turns, self.max_image_search, self.max_text_search)

    def search_penalty_at(self, step: int | None) -> float:
        """The penalty in force at training `step` (the warm-up schedule)."""
        if self.penalty_warmup_steps <= 0:
            return self.search_penalty
        if step is None:
            raise ValueError(
                f"reward option penalty_warmup_steps={self.penalty_warmup_steps} needs the "
                "training step: pass step= or extra_info['step']"
            )
        return self.search_penalty * min(1.0, max(step, 0) / self.penalty_warmup_steps)


# ---------------------------------------------------------------------------------------
# Accuracy
# ---------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
# Dashes and slashes separate words ("Guinea-Bissau" = "Guinea Bissau"); other
# punctuation is deleted as in SQuAD ("U.S." = "US", "1,000" = "1000").
_SEPARATORS = frozenset("/\\")


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return unicodedata.normalize(
        "NFC", "".join(c for c in decomposed if not unicodedata.combining(c))
    )


def _punctuation_to(char: str) -> str:
    if char in _SEPARATORS or unicodedata.category(char) == "Pd":
        return " "
    if char in string.punctuation or unicodedata.category(char).startswith("P"):
        return ""
    return char


def normalize_answer(text: str, fold_accents: bool = False) -> str:
    """Lower case, no punctuation, no articles (a/an/the), single spaces; optionally no
    accents. Unicode compatibility forms are unified first (NFKC)."""
    text = unicodedata.normalize("NFKC", text)
    if fold_accents:
        text = _strip_accents(text)
    text = "".join(_punctuation_to(c) for c in text.casefold())
    return " ".join(_ARTICLES.sub(" ", text).split())


_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\d)|[-+]?\.\d+")


def _as_number(text: str) -> float | None:
    """The number that `text` is (commas, a sign and a trailing % allowed), else None."""
    stripped = text.strip().rstrip("%").strip()
    if not _NUMBER.fullmatch(stripped):
        return None
    return float(stripped.replace(",", ""))


def numeric_match(prediction: str, gold: str, rel_tol: float) -> bool:
    """Gold is a number and the prediction holds exactly one number within `rel_tol`."""
    target = _as_number(gold)
    if target is None:
        return False
    found = _NUMBER.findall(prediction)
    if len(found) != 1:
        return False
    return math.isclose(float(found[0].replace(",", "")), target, rel_tol=rel_tol, abs_tol=0.0)


def answer_matches(prediction: str, golds: Sequence[str], config: RewardConfig) -> bool:
    """Whether `prediction` counts as any of `golds` under `config`'s matching rules."""
    predicted = normalize_answer(prediction, config.fold_accents)
    padded = f" {predicted} "
    for gold in golds:
        expected = normalize_answer(gold, config.fold_accents)
        if not expected:  # a gold of only articles/punctuation would match everything
            continue
        if predicted == expected:
            return True
        # Whole words, so that gold "US" is not found inside "Russia".
        if config.match == "subem" and f" {expected} " in padded:
            return True
        if config.numeric_tolerance is not None and numeric_match(
            prediction, gold, config.numeric_tolerance
        ):
            return True
    return False


def is_abstention(prediction: str, config: RewardConfig) -> bool:
    predicted = normalize_answer(prediction, config.fold_accents)
    return any(
        predicted == normalize_answer(phrase, config.fold_accents)
        for phrase in config.abstention_phrases
    )


_GOLD_KEYS = ("ground_truth", "target", "candidate_answers", "aliases")


def gold_answers(ground_truth: Any) -> list[str]:
    """Accepted answers, first the main one, without duplicates.

    `ground_truth` is a string, a list of strings (or a numpy array of them), or a dict
    such as FVQA's `reward_model`: {"ground_truth": str, "candidate_answers": JSON list as
    a string}; "target" and "aliases" keys are read too.
    """
    if isinstance(ground_truth, Mapping):
        present = [key for key in _GOLD_KEYS if ground_truth.get(key) is not None]
        if not present:
            raise ValueError(
                f"ground truth dict has none of the keys {list(_GOLD_KEYS)}: "
                f"got {sorted(map(str, ground_truth))}"
            )
        answers = [a for key in present for a in _answer_list(ground_truth[key], key)]
    else:
        answers = _answer_list(ground_truth, "ground_truth")
    unique = list(dict.fromkeys(a.strip() for a in answers if a and a.strip()))
    if not unique:
        raise ValueError(f"ground truth {ground_truth!r} holds no non-empty answer")
    return unique


def _answer_list(value: Any, key: str) -> list[str]:
    if hasattr(value, "tolist"):  # numpy arrays and scalars from parquet readers
        value = value.tolist()
    if isinstance(value, str):
        if key != "candidate_answers":
            return [value]
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"ground truth candidate_answers is not a JSON list: {value[:80]!r} ({error})"
            ) from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [str(value)]
    if isinstance(value, (list, tuple)):
        bad = [item for item in value if not isinstance(item, (str, int, float))]
        if bad:
            raise ValueError(f"ground truth {key} holds a non-text answer: {bad[0]!r}")
        return [str(item) for item in value]
    raise ValueError(f"ground truth {key} must be text or a list of text, got {value!r}")


# ---------------------------------------------------------------------------------------
# The reward
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RewardResult:
    """The reward of one trajectory and the parts it is made of."""

    score: float  # the reward
    acc: float  # 1.0 if the final answer is correct, else 0.0
    format: float  # 1.0 if the action sequence is valid within the limits, else 0.0
    format_reason: str  # "" when format is 1.0, else the first problem
    answer: str  # the final answer, "" if the trajectory did not end with one
    abstained: bool  # the final answer is an abstention phrase (and not correct)
    search_multiplier: float  # SearchPenalty: the factor applied to the accuracy term
    n_image_search: int
    n_text_search: int
    n_turns: int

    def metrics(self) -> dict[str, float | int]:
        """Numbers only: veRL averages every key of a reward dict into its metrics."""
        return {
            "score": self.score,
            "acc": self.acc,
            "format": self.format,
            "n_image_search": self.n_image_search,
            "n_text_search": self.n_text_search,
            "n_search": self.n_image_search + self.n_text_search,
            "n_turns": self.n_turns,
            "search_multiplier": self.search_multiplier,
            "abstained": float(self.abstained),
        }


def score_trajectory(
    actions: Sequence[Action],
    ground_truth: Any,
    config: RewardConfig | None = None,
    step: int | None = None,
) -> RewardResult:
    """The reward of a trajectory given its parsed turns.

    `ground_truth`: anything `gold_answers` accepts. `step`: the training step, needed
    only by the penalty warm-up. Searches are counted over valid search turns, including
    any past the limits (those make the format term 0 as well).
    """
    config = config or RewardConfig()
    golds = gold_answers(ground_truth)
    check = check_sequence(actions, config.limits)
    n_image = sum(action.kind == "image_search" for action in actions)
    n_text = sum(action.kind == "text_search" for action in actions)
    final = actions[-1] if actions and actions[-1].kind == "answer" else None
    answer = final.answer if final else ""
    credited = final is not None and (check.valid or not config.acc_requires_format)
    correct = credited and answer_matches(answer, golds, config)
    abstained = credited and not correct and is_abstention(answer, config)
    acc_term = 1.0 if correct else config.abstention_score if abstained else 0.0

    penalty = config.search_penalty_at(step)
    n_search = n_image + n_text
    if config.compound_penalty:
        multiplier = (1.0 - penalty) ** n_search
    else:
        multiplier = 1.0 - penalty if n_search else 1.0
    format_score = 1.0 if check.valid else 0.0
    score = (1.0 - config.alpha) * acc_term * multiplier + config.alpha * format_score
    return RewardResult(
        score=score,
        acc=1.0 if correct else 0.0,
        format=format_score,
        format_reason=check.reason,
        answer=answer,
        abstained=abstained,
        search_multiplier=multiplier,
        n_image_search=n_image,
        n_text_search=n_text,
        n_turns=len(actions),
    )


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    **options: Any,
) -> dict[str, float | int]:
    """veRL reward function: the reward dict of one response text.

    `solution_str`: the whole response of a trajectory, the model's turns with the tool
    messages (`<information>` blocks) between them, with or without ChatML markers.
    `ground_truth`: a string, a list, or FVQA's `reward_model` dict.
    `extra_info`: may carry `reward_config` (a dict of `RewardConfig` options) and `step`
    (or `global_step`) for the penalty warm-up. `options`: `RewardConfig` options too
    (veRL passes `custom_reward_function.reward_kwargs` this way); they win over
    `extra_info`. `data_source` is accepted for veRL's signature: the rule is the same for
    every source.
    """
    del data_source
    overrides: dict[str, Any] = {}
    step = None
    if extra_info:
        overrides.update(extra_info.get("reward_config") or {})
        step = extra_info.get("step", extra_info.get("global_step"))
    overrides.update(options)
    config = RewardConfig.from_dict(overrides) if overrides else RewardConfig()
    actions = parse_trajectory(solution_str, require_reason=config.require_reason)
    return score_trajectory(actions, ground_truth, config, step).metrics()
