"""`mmsr train sft`: masked NLL on trajectories that teach the tag format.

Two sources of trajectories, both turned into exact tensors by `RolloutEngine.replay`
(the same chat layout, masks and M-RoPE positions as rollouts; tool calls really run):
- world synthesis: a plan drawn AT RANDOM (seeded, never from what the model knows):
  answer at once, image search then answer (flag questions), or (attribute questions)
  image search, text search, answer / text search, answer; then a question the plan
  fits. So SFT teaches how to use the tags, and GRPO still has to learn when searching
  pays off. What a turn says from the model's own knowledge (the flag's name, an answer
  given at once) stays untrained: SFT teaches the words around it, not the knowledge.
- distillation: the assistant turns recorded in any trajectory JSONL (`mmsr eval` output
  lines, or lines holding `question` + `trajectory.turns`), replayed turn by turn.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mmsr.data.record import Sample, SampleImage
from mmsr.rollout.batch import collate
from mmsr.rollout.logprobs import token_logprobs
from mmsr.rollout.trajectory import Trajectory
from mmsr.train.align import answer_text
from mmsr.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, save_final
from mmsr.train.config import SFTConfig, config_to_dict, config_to_yaml
from mmsr.train.grpo import micro_batches
from mmsr.train.lora import count_parameters, prepare_trainable
from mmsr.train.metrics import MetricsLogger
from mmsr.train.optim import build_optimizer, build_scheduler

PLANS = ("answer", "image", "image+text", "text")
# The world scripts' wording; cached SFT stages (demo, replication) are keyed on it.
# 2: the answer turn after a text search quotes the evidence (`quote_evidence`).
# 3: the first turn names what the question asks for, in the question's words.
# 4: search plans are drawn equally often, then a question that fits.
# 5: the answer and text plans name the flag in the eye's words (`align.answer_text`).
# 6: what the model says from its own knowledge (that name; an answer at once) is untrained.
WORLD_SCRIPTS_VERSION = 6


# ------------------------------------------------------------------------- the loss
def sft_loss(model, batch, n_tokens: float) -> torch.Tensor:
    """Masked NLL: -sum(log p * loss_mask) / n_tokens, with `n_tokens` the loss tokens of
    the WHOLE optimizer batch (micro-batches then add up to the full-batch loss)."""
    logp, _ = token_logprobs(model, batch, where=batch.loss_mask)
    mask = batch.loss_mask.to(logp.device).float()
    return -(logp * mask).sum() / max(n_tokens, 1.0)


# ------------------------------------------------------------------------- world scripts
def is_flag_question(sample: Sample) -> bool:
    return sample.extra.get("qtype") == "flag" or sample.tools == "image"


def plan_fits(plan: str, sample: Sample) -> bool:
    """Whether `plan` can answer `sample`: "image" alone answers only "which flag is this"
    questions; the text plans answer only attribute questions."""
    if plan == "answer":
        return True
    return (plan == "image") == is_flag_question(sample)


def choose_plan(rng: random.Random, p_direct: float) -> str:
    """A plan drawn at random, never from what the model knows: "answer" with `p_direct`,
    else one of the three search plans, equally often (each needs examples: drawn by the
    question instead, the flag-only "image" plan got 9 of 128 scripts)."""
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
    pieces = [p.strip(" .;…") for p in re.split(r"\n| - |(?<=[.;])\s+", observation)]
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


def plan_turns(
    plan: str, sample: Sample, entity_name: str, evidence: str | None = None
) -> list[str]:
    """The assistant turns of `plan` for `sample` (the answer is the gold one). After a
    text search the answer turn quotes `evidence` (the result's words that state the
    answer) when there is one: a small model learns to copy the answer out of the results
    when its reasoning first copies the line that holds it."""
    answer = f"<answer>{sample.answer}</answer>"
    topic = question_topic(sample)
    query = f"{entity_name} {topic}"
    # Every plan's first reasoning names what the question asks for, copied from it: the
    # text search later copies the topic from there ("I look up its continent").
    if sample.extra.get("qtype") == "flag":
        asks = "The question asks which country this flag belongs to."
    else:
        asks = f"The question asks for the {topic}."
    # Answering from its own knowledge, the model first names the flag in the words the
    # eye was aligned to answer with (`mmsr.train.align.answer_text`): the name it writes is
    # then what its eye sees, and a fact answer can follow from that name. Without it, SFT
    # nano answered "Asia" to "which country's flag is this?" for France, whose flag its
    # eye names.
    if plan == "answer":
        known = "" if sample.extra.get("qtype") == "flag" else f" I know its {topic}."
        return [f"<reason>{asks} {answer_text(entity_name)}{known}</reason>{answer}"]
    look = f"<reason>{asks} I cannot tell which flag this is, so I search with the image.</reason>"
    image = f"{look}<search><img></search>"
    found = f"<reason>The results show the flag of {entity_name}.</reason>"
    text = f"<text_search>{query}</text_search>"
    if plan == "image":
        return [image, f"{found}{answer}"]
    said = f"The results say: {evidence}." if evidence else f"The results give the {topic}."
    read = f"<reason>{said}</reason>{answer}"
    if plan == "image+text":
        need = (
            f"<reason>The results show the flag of {entity_name}; I look up its {topic}.</reason>"
        )
        return [image, f"{need}{text}", read]
    if plan == "text":
        unsure = f"<reason>{asks} {answer_text(entity_name)} I do not know its {topic}.</reason>"
        return [f"{unsure}{text}", read]
    raise ValueError(f"unknown SFT plan {plan!r} (have {PLANS})")


def own_knowledge_spans(plan: str, sample: Sample, entity_name: str) -> list[str]:
    """What the first turn of `plan` says from the model's own knowledge: the flag's name
    (text and answer plans) and, answering at once, the answer itself. SFT leaves them
    untrained (`untrained_pieces`): trained on every gold name, unfamiliar flags included,
    nano learned to guess names from a prior: after SFT it named 18-27 of 48 familiar
    flags in the tool prompt, where its eye alone named 37-39 (docs/RESULTS.md)."""
    if plan == "answer":
        return [f" {entity_name}", sample.answer]
    if plan == "text":
        return [f" {entity_name}"]
    return []


def untrained_pieces(turn: str, spans: Sequence[str]) -> list[tuple[str, bool]]:
    """`turn` as replay pieces `(text, trained)`: each of `spans`, found in order after the
    previous one, untrained. A span that is not there is an error (a script bug)."""
    pieces, at = [], 0
    for span in spans:
        start = turn.find(span, at)
        if start < 0 or not span:
            raise ValueError(f"SFT script: {span!r} is not in {turn[at:]!r}")
        pieces += [(turn[at:start], True), (span, False)]
        at = start + len(span)
    return [(text, trained) for text, trained in [*pieces, (turn[at:], True)] if text]


def scripted(turns: Sequence[str]):
    """A replay script that writes `turns` in order (then repeats the last)."""

    def script(turn_index: int, observations: list[str]) -> str:
        del observations
        return turns[min(turn_index, len(turns) - 1)]

    return script


def world_script(plan: str, sample: Sample, entity_name: str):
    """The replay script of `plan`: its turns, the first one with the model's own knowledge
    untrained (`own_knowledge_spans`), the answer turn after a text search quoting the
    evidence found in that search's results (`quote_evidence`)."""
    turns = plan_turns(plan, sample, entity_name)
    topic = question_topic(sample)
    golds = [sample.answer, *sample.aliases]
    first = untrained_pieces(turns[0], own_knowledge_spans(plan, sample, entity_name))

    def script(turn_index: int, observations: list[str]):
        last = turn_index >= len(turns) - 1
        if last and plan in ("image+text", "text") and observations:
            evidence = quote_evidence(observations[-1], golds, topic)
            return plan_turns(plan, sample, entity_name, evidence)[-1]
        return first if turn_index == 0 else turns[min(turn_index, len(turns) - 1)]

    return script


def world_sft_scripts(
    samples: Sequence[Sample], n: int, p_direct: float, seed: int
) -> tuple[list[Sample], list[Any], list[str]]:
    """`n` (sample, script, plan) triples: a random plan (`choose_plan`), then a question
    it fits drawn with replacement from world `samples` (a plan no question fits is
    drawn again)."""
    from mmsr.world.load import load_world

    world = load_world()
    rng = random.Random(seed)
    if not samples:
        raise ValueError("world SFT: no questions to script")
    for sample in samples:
        if not sample.extra.get("entity"):
            raise ValueError(f"sample {sample.id}: world SFT needs extra.entity (a world question)")
    fitting = {plan: [s for s in samples if plan_fits(plan, s)] for plan in PLANS}
    chosen, scripts, plans = [], [], []
    while len(chosen) < n:
        plan = choose_plan(rng, p_direct)
        if not fitting[plan]:
            continue
        sample = fitting[plan][rng.randrange(len(fitting[plan]))]
        entity = sample.extra["entity"]
        chosen.append(sample)
        scripts.append(world_script(plan, sample, world.entity(entity).name))
        plans.append(plan)
    return chosen, scripts, plans


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


def build_sft_trajectories(
    config: SFTConfig, engine, console: Console | None = None
) -> tuple[list[Trajectory], dict[str, int]]:
    """Replay the SFT scripts through `engine`; returns trajectories and plan counts."""
    console = console or Console()
    if config.data.startswith("world:"):
        from mmsr.eval.samples import load_eval_samples

        pool = load_eval_samples(config.data)
        samples, scripts, plans = world_sft_scripts(
            pool, config.n_trajectories, config.p_direct, config.run.seed
        )
    else:
        samples, scripts = read_distillation(Path(config.data))
        plans = ["distilled"] * len(samples)
    trajectories: list[Trajectory] = []
    chunk = max(1, config.engine.batch_size)
    with Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(), console=console) as bar:
        task = bar.add_task("replay", total=len(samples))
        for start in range(0, len(samples), chunk):
            part = slice(start, start + chunk)
            trajectories += engine.replay(samples[part], scripts[part])
            bar.update(task, completed=min(len(samples), start + chunk))
    counts = {plan: plans.count(plan) for plan in sorted(set(plans))}
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
        trajectories, counts = build_sft_trajectories(config, engine, console)
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
    logger = MetricsLogger(
        out, config.run.tensorboard, config.run.wandb_project, config_to_dict(config)
    )
    try:
        with Progress(
            TextColumn("SFT"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"), console=console,
        ) as bar:  # fmt: skip
            task = bar.add_task("sft", total=config.steps, completed=step, info="")
            while step < config.steps:
                batch = [trajectories[i] for i in order.take(config.batch_size)]
                metrics = sft_step(model, batch, optimizer, scheduler, config, pad_id)
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
    model, batch: Sequence[Trajectory], optimizer, scheduler, config: SFTConfig, pad_id: int
):
    """One optimizer step of masked NLL over `batch`, accumulated over micro-batches."""
    started = time.perf_counter()
    n_tokens = float(sum(t.n_sampled_tokens for t in batch))
    model.train()
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for chunk in micro_batches(batch, config.micro_batch_size):
        loss = sft_loss(model, collate([batch[i] for i in chunk], pad_id), n_tokens)
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
        "loss_tokens": n_tokens,
        "tokens_per_s": sum(t.length for t in batch) / max(seconds, 1e-9),
    }
