"""`mmsr train sft`: masked NLL on trajectories that teach the tag format.

Two sources of trajectories, both turned into exact tensors by `RolloutEngine.replay`
(the same chat layout, masks and M-RoPE positions as rollouts; tool calls really run):
- world synthesis: a plan drawn at random (seeded): answer at once, image search then
  answer (flag questions), or (attribute questions) image search, text search, answer /
  text search, answer; then a question that takes it, by what the model says about it on
  its own (`plan_from_knowledge`): it answers at once what it gets right, looks up a fact
  it states wrong, searches with the image a flag it cannot name. What a turn says from
  the model's own knowledge (the flag's name, a fact stated at once) is the model's own
  greedy words: SFT teaches the tags and where the model's knowledge ends, not knowledge.
- distillation: the assistant turns recorded in any trajectory JSONL (`mmsr eval` output
  lines, or lines holding `question` + `trajectory.turns`), replayed turn by turn.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import hashlib
import itertools
import json
import random
import re
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mmsr.data.record import Sample, SampleImage
from mmsr.models.precision import matmul_precision
from mmsr.rollout.batch import collate
from mmsr.rollout.forcing import SEARCH_WORDS
from mmsr.rollout.logprobs import token_logprobs
from mmsr.rollout.trajectory import Trajectory
from mmsr.train.align import answer_text
from mmsr.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, save_final
from mmsr.train.config import SFTConfig, check_decision, config_to_dict, config_to_yaml
from mmsr.train.grpo import micro_batches
from mmsr.train.lora import count_parameters, prepare_trainable
from mmsr.train.metrics import MetricsLogger
from mmsr.train.optim import build_optimizer, build_scheduler
from mmsr.train.shared_trunk import TrunkCache, frozen_trunk_layers

PLANS = ("answer", "image", "image+text", "text")
# The world scripts' wording; cached SFT stages (demo, replication) are keyed on it.
# 2: the answer turn after a text search quotes the evidence (`quote_evidence`).
# 3: the first turn names what the question asks for, in the question's words.
# 4: search plans are drawn equally often, then a question that fits.
# 5: the answer and text plans name the flag in the eye's words (`align.answer_text`).
# 6: (briefly) that name and an answer given at once left untrained: nano learned to skip
#    the name ("This is the flag of. I know its continent.").
# 7: what the model says from its own knowledge (that name, an answer at once) is its own
#    greedy words, not the gold ones.
# 8: the name asked in the flag question's context and kept only when it names an entity;
#    an own answer kept only when it is a short answer (v7 taught "This is the flag of
#    the country or territory whose flag is shown." and "The answer is the continent").
# 9: a quote no longer starts with the list dash of a line start; every turn after the
#    first starts by repeating what the question asks for (`plan_turns`).
# 10: an answer given at once states the fact in a sentence the model completes itself
#    (`fact_start`); flag questions get the answer plan as often as attribute questions.
# 11: with the model speaking, a question's plan follows what it gets right on its own
#    (`plan_from_knowledge`); the plan mix stays `choose_plan`'s.
WORLD_SCRIPTS_VERSION = 11


# ------------------------------------------------------------------------- the loss
def sft_loss(model, batch, n_tokens: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Masked NLL: -sum(log p * w) / n_tokens, with w the loss mask (or `weights` [B, T],
    zero outside it) and `n_tokens` the sum of w over the WHOLE optimizer batch
    (micro-batches then add up to the full-batch loss)."""
    logp, _ = token_logprobs(model, batch, where=batch.loss_mask)
    mask = batch.loss_mask if weights is None else weights
    return -(logp * mask.to(logp.device).float()).sum() / max(n_tokens, 1.0)


ANSWER_SPAN = re.compile(r"<answer>(.*?</answer>)", re.S)


def answer_token_weights(trajectory: Trajectory, tokenizer, weight: float) -> torch.Tensor:
    """[T] float: the trajectory's loss mask, with `weight` on the sampled tokens that
    write an answer tag's content and its closing tag (a token counts when any of its
    characters does). Read from the sampled tokens themselves, one decoded token at a
    time, so the weights fall on exactly the tokens the loss sees."""
    weights = trajectory.loss_mask.float().clone()
    sampled = trajectory.loss_mask.nonzero().flatten().tolist()
    if weight == 1.0 or not sampled:
        return weights
    pieces = [tokenizer.decode([int(trajectory.input_ids[t])]) for t in sampled]
    ends = list(itertools.accumulate(len(piece) for piece in pieces))
    for match in ANSWER_SPAN.finditer("".join(pieces)):
        start, stop = match.span(1)
        # from the token holding the span's first character to the one holding its last
        for at in range(bisect.bisect_right(ends, start), bisect.bisect_left(ends, stop) + 1):
            weights[sampled[at]] = weight
    return weights


def pad_weights(rows: Sequence[torch.Tensor]) -> torch.Tensor:
    """[B, T] right-padded with zeros, as `collate` pads the loss mask."""
    return torch.nn.utils.rnn.pad_sequence(list(rows), batch_first=True)


# ------------------------------------------------------------------------- world scripts
def is_flag_question(sample: Sample) -> bool:
    return sample.extra.get("qtype") == "flag" or sample.tools == "image"


def plan_fits(plan: str, sample: Sample) -> bool:
    """Whether `plan` can answer `sample`: "image" alone answers only "which flag is this"
    questions; the text plans answer only attribute questions."""
    if plan == "answer":
        return True
    return (plan == "image") == is_flag_question(sample)


# Of the three search plans, "image" is the flag questions' one: the answer plan draws a
# flag question this often, so every kind of question answers at once with `p_direct`.
FLAG_SHARE = 1 / 3


def choose_plan(rng: random.Random, p_direct: float) -> str:
    """A plan drawn at random: "answer" with `p_direct`, else one of the three search
    plans, equally often (each needs examples: drawn by the question instead, the
    flag-only "image" plan got 9 of 128 scripts)."""
    if rng.random() < p_direct:
        return "answer"
    return rng.choice(["image", "image+text", "text"])


def quote_evidence(
    observation: str, golds: Sequence[str], topic: str, limit: int = 90
) -> str | None:
    """The piece of a search `observation` that states a gold answer, to quote before
    answering. The text is cut at line ends, list dashes and sentence ends; a piece that
    holds a gold (whole words, any case) is kept whole when short, else up to the end of
    the gold ("Languages: French (official, ...)" -> "Languages: French"). Pieces in a
    "Label: value" form whose label names the `topic` win, then the shortest. None when
    no piece holds a gold within `limit` characters (the answer turn then quotes nothing)."""
    # A piece at a line start keeps its list dash ("- Continent: Africa"): strip it, so the
    # quote starts with the label the answer follows (v8 nano wrote "The results say: - - ...").
    pieces = [p.strip(" .;…-") for p in re.split(r"\n| - |(?<=[.;])\s+", observation)]
    # Whole words: "French" is not in "French-administered".
    wanted = [
        re.compile(rf"(?<![\w-]){re.escape(g.strip())}(?![\w-])", re.I) for g in golds if g.strip()
    ]
    topic_words = [w for w in topic.lower().split() if len(w) > 2]

    def names_topic(label: str) -> bool:
        return any(w.startswith(t) or t.startswith(w) for w in label.split() for t in topic_words)

    found = []
    for piece in pieces:
        ends = [m.end() for w in wanted if (m := w.search(piece))]
        if not ends or min(ends) > limit:
            continue
        quote = piece if len(piece) <= limit else piece[: min(ends)]
        label = quote.split(":", 1)[0].lower() if ":" in quote else ""
        found.append(((not names_topic(label), not label, len(quote)), quote))
    return min(found)[1] if found else None


def question_topic(sample: Sample) -> str:
    """What a world question asks about, in the question's own words ("official language",
    "internet country code"; `mmsr.world.questions.TOPICS`)."""
    from mmsr.world.questions import TOPICS

    qtype = str(sample.extra.get("qtype", "answer"))
    return TOPICS.get(qtype, qtype.replace("_", " "))


@dataclass(frozen=True)
class OwnWords:
    """What the model itself says (greedy, before SFT) where a script speaks from its own
    knowledge: how it names the flag, and its answer when it answers at once; None where
    it says no entity's name or no short answer."""

    name: str | None
    answer: str | None


def plan_from_knowledge(
    sample: Sample, words: OwnWords, named: str | None, trust_own_name: bool = True
) -> str:
    """The plan a question's script follows, from what the model itself says about it
    (`words`; `named`: the entity its name denotes): it answers at once what it gets right
    on its own (the flag's name; and for an attribute question, the fact too, by exact
    match), looks up the fact of a flag it names right but a fact it does not know (text),
    and searches with the image a flag it cannot name (image, then text for a fact).
    Rejection sampling on the model's own answers: the search decision SFT teaches follows
    the model's knowledge, the knowledge itself stays the model's. Drawn at random instead
    (v9, v10), nano's greedy decision ignored the question: always search, or never.

    `trust_own_name` False: a fact the model does not know is always looked up after an
    image search (image+text), also for a flag it names right: SFT nano names test flags
    right only about half the time it names one, so its text searches for its own name
    paid in 3 of 12 test questions, image then text in 20 of 28 (docs/RESULTS.md)."""
    from mmsr.reward import RewardConfig, answer_matches

    knows_flag = named is not None and named == sample.extra.get("entity")
    if is_flag_question(sample):
        return "answer" if knows_flag else "image"
    if not knows_flag:
        return "image+text"
    golds = [sample.answer, *sample.aliases]
    knows_fact = words.answer is not None and answer_matches(words.answer, golds, RewardConfig())
    if knows_fact:
        return "answer"
    return "text" if trust_own_name else "image+text"


def fact_start(sample: Sample, name: str) -> str:
    """The start of the sentence that states the fact an attribute question asks about
    `name`, for the model to complete from its own knowledge. Base nano completes it far
    better than it fills an answer tag: given the right name, 35 of 114 world:test attribute
    questions right (exact match) this way, 3 after "... I know its <topic>.</reason>
    <answer>", which mostly drew the country's name (`bench/fact_elicitation.py`)."""
    qtype = sample.extra.get("qtype")
    if qtype == "continent":
        return f"{name} is on the continent of"
    if qtype == "independence":
        return f"{name} became independent in"
    return f"The {question_topic(sample)} of {name} is"


def asks_for(sample: Sample) -> str:
    """Every plan's first words: what the question asks for, copied from it (the text
    search later copies the topic from there: "I look up its continent")."""
    if sample.extra.get("qtype") == "flag":
        return "The question asks which country this flag belongs to."
    return f"The question asks for the {question_topic(sample)}."


def fact_decision(sample: Sample, knows: bool) -> str:
    """The "fact" decision of an attribute question, led by its topic so the deciding
    token (" know" / " look") follows the topic's own words. Every question type shares
    the "flag" decision's words, and GRPO's push on them from the flag questions, which
    nano names, carried every type to answering at once (docs/RESULTS.md, stop 34)."""
    topic = question_topic(sample)
    return f"Its {topic} I know." if knows else f"Its {topic} I look up:"


def name_and_fact_decision(sample: Sample, named: str, decision: str, knows: bool) -> str | None:
    """The flag's name (`answer_text`) with the fact's decision (`fact_decision`) before it
    ('fact') or after it ('flag-fact'); None where the question decides on the flag alone
    (a flag question, or the 'flag' decision)."""
    if decision == "flag" or is_flag_question(sample):
        return None
    name, fact = answer_text(named), fact_decision(sample, knows)
    return f"{fact} {name}" if decision == "fact" else f"{name} {fact}"


def plan_turns(
    plan: str,
    sample: Sample,
    entity_name: str,
    evidence: str | None = None,
    own: OwnWords | None = None,
    decision: str = "flag",
    names_flag: bool = False,
) -> list[str]:
    """The assistant turns of `plan` for `sample`. Where the model speaks from its own
    knowledge (the flag's name in the answer and text plans, an answer given at once) the
    words are `own` (the gold ones when None). Read from search results, they are the
    results' words: the flag shown (`entity_name`), the gold answer the text search
    states, quoting `evidence` (the result's words that state it) when there is one: a
    small model learns to copy the answer out of the results when its reasoning first
    copies the line that holds it. `decision` (`config.DECISIONS`): the words the first turn
    decides with on an attribute question; with 'flag-fact', `names_flag` says whether the
    model's own name of the flag is said before the fact's decision (a name it says right,
    or any with `SFTConfig.keep_wrong_names`) or not (the flag's words decide to search
    the image). The turns after an image search name the question's own flag
    (`entity_name`), whatever the model said before."""
    check_decision(decision)
    answer = f"<answer>{sample.answer}</answer>"
    topic = question_topic(sample)
    asks = asks_for(sample)
    named = own.name if own else entity_name
    by_fact = decision == "fact" and not is_flag_question(sample)
    # Answering from its own knowledge, the model first names the flag in the words its
    # eye was aligned with (`mmsr.train.align.answer_text`), so the name is what its eye
    # sees and a fact can follow from it.
    if plan == "answer":
        said = own.answer if own else sample.answer
        if is_flag_question(sample):
            return [f"<reason>{asks} {answer_text(named)}</reason><answer>{said}</answer>"]
        # The fact is stated in the sentence the model completed (`fact_start`), then
        # copied into the answer tag.
        fact = f"{fact_start(sample, named)} {said}."
        knows = name_and_fact_decision(sample, named, decision, True) or answer_text(named)
        return [f"<reason>{asks} {knows} {fact}</reason><answer>{said}</answer>"]
    # Every later turn starts by repeating what the question asks for: an exact repeat is
    # easy for a small model to copy, and it puts the topic right before the choices that
    # need it (answer with the flag, or look up its topic; which line of the results to
    # quote). v8 nano dropped the topic after the image search and quoted other facts.
    # GRPO's decision exploration forces these words where the scripts decide (`at="reasoning"`).
    if by_fact:
        decide = f"{fact_decision(sample, False)} first the flag, with the image."
    elif names_flag and (unknown := name_and_fact_decision(sample, named, decision, False)):
        # "flag-fact", a flag the model names: the fact's words decide after its name; a
        # flag it does not name takes the flag decision's search words.
        decide = f"{unknown} first the flag, with the image."
    else:
        decide = f"{SEARCH_WORDS}, so I search with the image."
    look = f"<reason>{asks} {decide}</reason>"
    image = f"{look}<search><img></search>"
    found = f"<reason>{asks} The results show the flag of {entity_name}.</reason>"
    if plan == "image":
        return [image, f"{found}{answer}"]
    said = f"The results say: {evidence}." if evidence else f"The results give the {topic}."
    read = f"<reason>{asks} {said}</reason>{answer}"
    if plan == "image+text":
        need = (
            f"<reason>{asks} The results show the flag of {entity_name}; I look up its "
            f"{topic}.</reason>"
        )
        return [image, f"{need}<text_search>{entity_name} {topic}</text_search>", read]
    if plan == "text":
        unsure = name_and_fact_decision(sample, named, decision, False)
        unsure = unsure or f"{answer_text(named)} I do not know its {topic}."
        return [f"<reason>{asks} {unsure}</reason><text_search>{named} {topic}</text_search>", read]
    raise ValueError(f"unknown SFT plan {plan!r} (have {PLANS})")


def scripted(turns: Sequence[str]):
    """A replay script that writes `turns` in order (then repeats the last)."""

    def script(turn_index: int, observations: list[str]) -> str:
        del observations
        return turns[min(turn_index, len(turns) - 1)]

    return script


def world_script(
    plan: str,
    sample: Sample,
    entity_name: str,
    own: OwnWords | None = None,
    decision: str = "flag",
    names_flag: bool = False,
):
    """The replay script of `plan`: its turns (`plan_turns`), the answer turn after a text
    search quoting the evidence for the gold answer found in that search's results
    (`quote_evidence`). A text plan is only drawn for a flag the model names right
    (`plan_from_knowledge`), so its search looks up the question's own country."""
    turns = plan_turns(plan, sample, entity_name, own=own, decision=decision, names_flag=names_flag)
    topic = question_topic(sample)
    golds = [sample.answer, *sample.aliases]

    def script(turn_index: int, observations: list[str]) -> str:
        last = turn_index >= len(turns) - 1
        if last and plan in ("image+text", "text") and observations:
            evidence = quote_evidence(observations[-1], golds, topic)
            return plan_turns(plan, sample, entity_name, evidence, own, decision, names_flag)[-1]
        return turns[min(turn_index, len(turns) - 1)]

    return script


# (samples, starts of their first assistant turn) -> the policy's greedy continuations, in
# the replay's context (image, tool instruction, question).
Speaker = Callable[[list[Sample], list[str]], list[str]]


def first_phrase(text: str, max_words: int = 8, brackets: bool = False) -> str:
    """A continuation cut at its first sentence mark or tag, and with `brackets` at its
    first bracket, quotes dropped: the name or answer it says ('"Hong Kong Sanscrit" (Hong
    Kong' -> 'Hong Kong Sanscrit'; names keep theirs: "Cocos (Keeling) Islands")."""
    unquoted = re.sub(r"[\"“”]", "", text)
    # A dot ends the phrase only before a space or the end: ".tg" is an answer.
    marks = r"[,;:!?<>()\[\]\n]|\.(?=\s|$)" if brackets else r"[,;:!?<>\n]|\.(?=\s|$)"
    phrase = re.split(marks, unquoted, maxsplit=1)[0].strip()
    return " ".join(phrase.split()[:max_words])


def looks_like_an_answer(text: str, topic: str, name: str = "", max_words: int = 5) -> bool:
    """A short answer, not a sentence about the question nor the country's `name` again:
    base nano often "answers" with "The answer is the continent", "The official language
    of the country ..." or, completing "The capital of Cameroon is", "Cameroon"."""
    words = text.lower().split()
    # The topic as a whole: "South Point" is a highest point.
    names_topic = f" {topic.lower()} " in f" {' '.join(words)} "

    def bare(said: list[str]) -> list[str]:
        return said[1:] if said[:1] == ["the"] else said

    said_the_name = bool(name) and bare(words) == bare(name.lower().split())
    echoes = {"answer", "country", "flag", "question"} & set(words)
    return 0 < len(words) <= max_words and not echoes and not names_topic and not said_the_name


def speak_own_words(
    speaker: Speaker,
    samples: Sequence[Sample],
    plans: Sequence[str],
    is_name: Callable[[str], bool],
) -> list[OwnWords | None]:
    """The model's own words for each answer / text plan (None for the others).

    The name: what it writes after "This is the flag of" about the same image asked "which
    country's flag is this?" (the flag question's context: asked with an attribute question,
    base nano mostly copies the question's subject, "the country or territory whose flag
    is shown"); None unless it names an entity (`is_name`). The answer, for an attribute
    question answered at once: how it completes the fact's sentence about the name it said
    (`fact_start`) in its own question's context; None unless that is a short answer
    (`looks_like_an_answer`). A flag question is answered with the name said."""
    from mmsr.train.align import NAMING
    from mmsr.world.questions import FLAG, TEMPLATES

    own: list[OwnWords | None] = [None] * len(samples)
    speaking = [i for i, plan in enumerate(plans) if plan in ("answer", "text")]
    if not speaking:
        return own
    flag = {"qtype": FLAG}
    asked = [
        dataclasses.replace(samples[i], question=TEMPLATES[FLAG], extra=flag) for i in speaking
    ]
    starts = [f"<reason>{asks_for(sample)} {NAMING}" for sample in asked]
    replies = speaker(asked, starts)
    names: dict[int, str | None] = {}
    for i, reply in zip(speaking, replies, strict=True):
        name = first_phrase(reply)
        names[i] = name if is_name(name) else None
    answering = [
        i
        for i in speaking
        if plans[i] == "answer" and names[i] and not is_flag_question(samples[i])
    ]
    starts = [
        f"<reason>{asks_for(samples[i])} {answer_text(names[i])} {fact_start(samples[i], names[i])}"
        for i in answering
    ]
    answered = speaker([samples[i] for i in answering], starts) if answering else []
    answers = dict(zip(answering, answered, strict=True))
    for i in speaking:
        said = names[i]  # a flag question is answered with the name said
        if i in answers:
            phrase = first_phrase(answers[i], brackets=True)
            topic = question_topic(samples[i])
            said = phrase if looks_like_an_answer(phrase, topic, names[i]) else None
        elif not is_flag_question(samples[i]):
            said = None
        own[i] = OwnWords(name=names[i], answer=said)
    return own


def world_sft_scripts(
    samples: Sequence[Sample],
    n: int,
    p_direct: float,
    seed: int,
    speaker: Speaker | None = None,
    trust_own_name: bool = True,
    decision: str = "flag",
    keep_wrong_names: bool = False,
    keep_wrong_names_except: Collection[str] = (),
) -> tuple[list[Sample], list[Any], list[str]]:
    """`n` (sample, script, plan) triples: a plan drawn at random (`choose_plan`: answer
    at once with `p_direct`, else one of the three search plans), then a question drawn
    with replacement (a plan no question takes is drawn again).

    With a `speaker` (the policy about to be trained), the model first speaks about up
    to `3 n` seeded questions (`speak_own_words`): each question takes the plan its
    words call for (`plan_from_knowledge`), and what a script says from the model's own
    knowledge is those words. So SFT teaches the tags, and to search where the model's
    own answer is wrong, never a fact the model does not say itself (trained on gold
    names, nano learned to guess names from a prior: docs/RESULTS.md, "SFT and the
    eye"). Without one, any question the plan fits, the gold words spoken.

    `trust_own_name` False: no text search for the model's own name of the flag; the
    scripts the "text" plan would have drawn search the image first ("image+text"), so the
    search plans' share stays `choose_plan`'s (`plan_from_knowledge`). `decision`: the
    words an attribute question's first turn decides with (`config.DECISIONS`, `plan_turns`).
    `keep_wrong_names` ('flag-fact'): an attribute question whose flag the model names
    wrongly keeps that name before the fact's decision, and the image search's result
    names the flag after it, so SFT shows the name read from the results overruling the
    model's own (`SFTConfig.keep_wrong_names`), except on the question types in
    `keep_wrong_names_except`."""
    from mmsr.train.eye_eval import NameIndex
    from mmsr.world.load import load_world

    check_decision(decision)
    world = load_world()
    rng = random.Random(seed)
    if not samples:
        raise ValueError("world SFT: no questions to script")
    for sample in samples:
        if not sample.extra.get("entity"):
            raise ValueError(f"sample {sample.id}: world SFT needs extra.entity (a world question)")
    index = NameIndex(world)
    pool = list(samples)
    own: list[OwnWords | None] = [None] * len(pool)
    named: list[str | None] = [None] * len(pool)  # the entity each own name denotes
    if speaker is None:
        takes = {plan: [i for i, s in enumerate(pool) if plan_fits(plan, s)] for plan in PLANS}
        # The answer plan draws flag and attribute questions apart (`FLAG_SHARE`): drawn
        # from all alike, a flag question (1 in 8) answered at once in 1 of 28 v9 scripts
        # and was searched in 1 of 4.
        kinds = [takes["image"], takes["text"]]
    else:
        pool = rng.sample(pool, min(len(pool), 3 * n))
        own = speak_own_words(speaker, pool, ["answer"] * len(pool), lambda t: bool(index.named(t)))
        named = [index.named(w.name) if w.name else None for w in own]
        known = [
            plan_from_knowledge(s, w, entity, trust_own_name)
            for s, w, entity in zip(pool, own, named, strict=True)
        ]
        takes = {plan: [i for i, k in enumerate(known) if k == plan] for plan in PLANS}
        kinds = []
    chosen: list[int] = []
    plans: list[str] = []
    while len(chosen) < n:
        plan = choose_plan(rng, p_direct)
        if plan == "text" and not trust_own_name:
            plan = "image+text"
        bucket = takes[plan]
        if plan == "answer" and kinds and all(kinds):
            bucket = kinds[0] if rng.random() < FLAG_SHARE else kinds[1]
        if not bucket:
            continue
        chosen.append(bucket[rng.randrange(len(bucket))])
        plans.append(plan)
    scripts = []
    for at, plan in zip(chosen, plans, strict=True):
        sample, said = pool[at], own[at]
        name = world.entity(sample.extra["entity"]).name
        words = None
        if said is not None:  # the gold name stands in where the model said none
            words = OwnWords(name=said.name or name, answer=said.answer or sample.answer)
        said_name = named[at] is not None
        keeps = keep_wrong_names and sample.extra.get("qtype") not in keep_wrong_names_except
        names_flag = said_name and (keeps or named[at] == sample.extra["entity"])
        scripts.append(world_script(plan, sample, name, words, decision, names_flag))
    return [pool[at] for at in chosen], scripts, plans


# ------------------------------------------------------------------------- distillation
def read_distillation(path: Path, only_correct: bool = True) -> tuple[list[Sample], list[Any]]:
    """Samples and replay scripts from a trajectory JSONL: each line holds `question` and
    `trajectory.turns[].text` (mmsr eval's trajectories.jsonl) or `turns` at top level;
    `image` (a path), `golds`, `sample_id` are used when present. `only_correct` keeps
    lines whose `correct_judge`/`correct_rule` verdict is true (rejection sampling)."""
    if not path.is_file():
        raise FileNotFoundError(f"--data {path}: no such trajectory file")
    samples, scripts = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not JSON ({err})") from err
        turns = (row.get("trajectory") or row).get("turns")
        if not isinstance(turns, list) or not turns or "question" not in row:
            raise ValueError(f"{path}:{number}: needs 'question' and non-empty 'turns'")
        verdict = row.get("correct_judge")
        verdict = row.get("correct_rule", True) if verdict is None else verdict
        if only_correct and not verdict:
            continue
        image = row.get("image")
        if image and not Path(image).is_absolute():
            image = str(path.parent / image)
        golds = row.get("golds") or [""]
        samples.append(
            Sample(
                id=str(row.get("sample_id", f"{path.name}:{number}")),
                question=row["question"],
                answer=golds[0] or "-",
                aliases=list(golds[1:]),
                images=[SampleImage(path=image)] if image else [],
            )
        )
        scripts.append(scripted([t["text"] for t in turns]))
    if not samples:
        raise ValueError(f"{path}: no usable trajectories (only_correct={only_correct})")
    return samples, scripts


def engine_speaker(engine, batch_size: int = 16, max_new_tokens: int = 12) -> Speaker:
    """The engine's policy as a `Speaker`: greedy, in the replay's first-turn context."""
    from mmsr.models.generate import generate_batch, open_image
    from mmsr.rollout.prompts import first_turn_text

    def speak(samples: list[Sample], starts: list[str]) -> list[str]:
        replies: list[str] = []
        for at in range(0, len(samples), batch_size):
            chunk = samples[at : at + batch_size]
            images = [open_image(s.images[0].bytes or s.images[0].path) for s in chunk]
            prompts = [first_turn_text(s.question, engine.config.limits) for s in chunk]
            replies += generate_batch(
                engine.policy, images, prompts, max_new_tokens, starts[at : at + batch_size]
            )
        return replies

    return speak


WORDS_FILE = "words.json"


def prompt_digest(prompt: str) -> str:
    """A short stand-in for a first turn's prompt (the tool instruction is most of it)."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


class RecordedSpeaker:
    """A `Speaker` that answers from recorded replies where it has them and asks `speaker`
    (the model) for the rest, recording every reply: a run's `words.json` lets a later SFT
    of the same policy skip speaking (nano: ~7 min for 480 questions). A reply is looked
    up by the question's id, the first turn's prompt and the start it continues, so a
    changed question, prompt or script start is spoken anew."""

    def __init__(self, speaker: Speaker, prompt: Callable[[Sample], str], path: str | None):
        self.speaker, self.prompt = speaker, prompt
        self.replies: dict[tuple[str, str, str], str] = {}
        self.reused = self.spoken = 0
        if path:
            try:
                rows = json.loads(Path(path).read_text(encoding="utf-8"))["replies"]
                self.replies = {(r["id"], r["prompt"], r["start"]): r["reply"] for r in rows}
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise ValueError(f"words {path}: not a readable {WORDS_FILE} ({err})") from err

    def __call__(self, samples: list[Sample], starts: list[str]) -> list[str]:
        keys = [(s.id, prompt_digest(self.prompt(s)), start)
                for s, start in zip(samples, starts, strict=True)]  # fmt: skip
        missing = [i for i, key in enumerate(keys) if key not in self.replies]
        if missing:
            said = self.speaker([samples[i] for i in missing], [starts[i] for i in missing])
            self.replies.update({keys[i]: reply for i, reply in zip(missing, said, strict=True)})
        self.spoken += len(missing)
        self.reused += len(keys) - len(missing)
        return [self.replies[key] for key in keys]

    def save(self, path: Path) -> None:
        """Write every reply heard or read (the prompt by its digest, `prompt_digest`)."""
        rows = [{"id": i, "prompt": p, "start": s, "reply": r}
                for (i, p, s), r in self.replies.items()]  # fmt: skip
        path.write_text(json.dumps({"replies": rows}, indent=0) + "\n", encoding="utf-8")


def build_sft_trajectories(
    config: SFTConfig, engine, console: Console | None = None, out: Path | None = None
) -> tuple[list[Trajectory], dict[str, int]]:
    """Replay the SFT scripts through `engine`; returns trajectories and plan counts. The
    model's spoken words (world synthesis) are read from `config.words` where recorded
    and saved to `out`/words.json."""
    console = console or Console()
    if config.data.startswith("world:"):
        from mmsr.eval.samples import load_eval_samples
        from mmsr.rollout.prompts import first_turn_text

        pool = load_eval_samples(config.data)
        started = time.perf_counter()
        speaker = RecordedSpeaker(
            engine_speaker(engine),
            lambda sample: first_turn_text(sample.question, engine.config.limits),
            config.words,
        )
        samples, scripts, plans = world_sft_scripts(
            pool,
            config.n_trajectories,
            config.p_direct,
            config.run.seed,
            speaker,
            config.trust_own_name,
            config.decision,
            config.keep_wrong_names,
            config.keep_wrong_names_except,
        )
        took = time.perf_counter() - started
        reused = f" ({speaker.reused} replies read from {config.words})" if config.words else ""
        console.print(f"the model spoke its own words in {took:.0f} s{reused}")
        if out is not None:
            speaker.save(out / WORDS_FILE)
    else:
        samples, scripts = read_distillation(Path(config.data))
        plans = ["distilled"] * len(samples)
    trajectories: list[Trajectory] = []
    chunk = max(1, config.engine.batch_size)
    started = time.perf_counter()
    with Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(), console=console) as bar:
        task = bar.add_task("replay", total=len(samples))
        for start in range(0, len(samples), chunk):
            part = slice(start, start + chunk)
            trajectories += engine.replay(samples[part], scripts[part])
            bar.update(task, completed=min(len(samples), start + chunk))
    replay_seconds = time.perf_counter() - started
    counts = {plan: plans.count(plan) for plan in sorted(set(plans))}
    console.print(f"replayed {len(samples)} scripts with their searches in {replay_seconds:.0f} s")
    return trajectories, counts


# ------------------------------------------------------------------------- training
def train_sft(
    config: SFTConfig,
    *,
    policy=None,
    tools=None,
    trajectories: Sequence[Trajectory] | None = None,
    console: Console | None = None,
    resume: bool = True,
) -> Path:
    """SFT as `config` says (or on given `trajectories`); returns the run folder."""
    from mmsr.rollout.engine import RolloutEngine
    from mmsr.train.loop import DataOrder, seed_everything

    console = console or Console()
    out = Path(config.run.out)
    out.mkdir(parents=True, exist_ok=True)
    config_yaml = config_to_yaml(config)
    (out / "config.yaml").write_text(config_yaml)
    console.rule("mmsr train sft: resolved config")
    console.print(config_yaml, markup=False, highlight=False)
    seed_everything(config.run.seed)
    if policy is None:
        from mmsr.models.loading import load_policy

        policy = load_policy(config.model.policy, config.model.device, config.model.dtype, console)
    if trajectories is None:
        if tools is None and config.search_config != "none":
            from mmsr.search.config import SearchConfig
            from mmsr.search.tools import make_tools

            tools = make_tools(SearchConfig.load(config.search_config))
        engine = RolloutEngine(policy, tools, config.engine)
        trajectories, counts = build_sft_trajectories(config, engine, console, out)
        console.print(f"SFT trajectories: {len(trajectories)} {counts}")
    model = prepare_trainable(policy.model, config.model, seed=config.run.seed)
    trainable, total = count_parameters(model)
    console.print(f"trainable parameters: {trainable:,} of {total:,}")
    optimizer = build_optimizer(model, config.optim)
    scheduler = build_scheduler(optimizer, config.optim, config.steps)
    order = DataOrder(len(trajectories), config.run.seed)
    step = 0
    checkpoints = out / "checkpoints"
    found = latest_checkpoint(checkpoints) if resume else None
    if found is not None:
        state = load_checkpoint(found, model, optimizer, scheduler)
        step = int(state["step"])
        order.epoch, order.position = state["data_order"]["epoch"], state["data_order"]["position"]
    pad = policy.tokenizer.pad_token_id
    pad_id = int(pad if pad is not None else policy.tokenizer.convert_tokens_to_ids("<|im_end|>"))
    weights = None
    if config.answer_weight != 1.0:
        tokenizer = policy.tokenizer
        weights = [answer_token_weights(t, tokenizer, config.answer_weight) for t in trajectories]
        stressed = sum(int((w == config.answer_weight).sum()) for w in weights)
        console.print(f"answer tokens weighted x{config.answer_weight:g}: {stressed}")
    frozen = frozen_trunk_layers(model) if config.trunk_cache else 0
    trunk = TrunkCache(model, frozen) if frozen else None
    if trunk is not None:
        console.print(f"the frozen layers 1-{frozen}: run once per trajectory, then replayed")
    logger = MetricsLogger(
        out, config.run.tensorboard, config.run.wandb_project, config_to_dict(config), after=step
    )
    try:
        with Progress(
            TextColumn("SFT"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"), console=console,
        ) as bar:  # fmt: skip
            task = bar.add_task("sft", total=config.steps, completed=step, info="")
            while step < config.steps:
                taken = order.take(config.batch_size)
                batch = [trajectories[i] for i in taken]
                rows = None if weights is None else [weights[i] for i in taken]
                metrics = sft_step(model, batch, optimizer, scheduler, config, pad_id, rows,
                                   trunk, taken)  # fmt: skip
                step += 1
                logger.log(step, metrics)
                bar.update(task, completed=step, info=f"loss {metrics['loss']:.3f}")
                if step % config.run.save_every == 0 or step == config.steps:
                    save_checkpoint(
                        checkpoints, step, model, optimizer, scheduler,
                        {"data_order": order.state()}, config_yaml, config.run.keep_checkpoints,
                    )  # fmt: skip
    finally:
        logger.close()
    if config.run.save_final:
        console.print(f"final model: {save_final(model, policy.processor, out / 'final')}")
    return out


def sft_step(
    model,
    batch: Sequence[Trajectory],
    optimizer,
    scheduler,
    config: SFTConfig,
    pad_id: int,
    weights: Sequence[torch.Tensor] | None = None,
    trunk: TrunkCache | None = None,
    keys: Sequence[int] | None = None,
):
    """One optimizer step of masked NLL over `batch`, accumulated over micro-batches;
    `weights` (one [T] tensor per trajectory, `answer_token_weights`) weigh its tokens;
    `trunk` reuses the frozen layers' output of trajectories seen before, by their `keys`
    (their indices in the training set)."""
    if trunk is not None and (keys is None or len(keys) != len(batch)):
        raise ValueError("a trunk cache needs one key per trajectory of the batch")
    started = time.perf_counter()
    sampled = float(sum(t.n_sampled_tokens for t in batch))
    n_tokens = sampled if weights is None else float(sum(w.sum() for w in weights))
    model.train()
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    device = next(model.parameters()).device
    for chunk in micro_batches(batch, config.micro_batch_size):
        reuse = contextlib.nullcontext()
        if trunk is not None:
            reuse = trunk.forward([keys[i] for i in chunk], [batch[i].length for i in chunk])
        with matmul_precision(device, config.model.matmul_dtype), reuse:
            rows = None if weights is None else pad_weights([weights[i] for i in chunk])
            loss = sft_loss(model, collate([batch[i] for i in chunk], pad_id), n_tokens, rows)
        loss.backward()
        total += float(loss.detach())
    params = [p for p in model.parameters() if p.requires_grad]
    clip = config.optim.grad_clip if config.optim.grad_clip > 0 else float("inf")
    norm = torch.nn.utils.clip_grad_norm_(params, clip)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    model.eval()
    seconds = time.perf_counter() - started
    return {
        "loss": total,
        "grad_norm": float(norm),
        "lr": lr,
        "loss_tokens": sampled,
        "tokens_per_s": sum(t.length for t in batch) / max(seconds, 1e-9),
    }
