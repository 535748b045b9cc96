"""Typed configs of `mmsr train sft` / `mmsr train grpo`, loaded from YAML.

Every field has a docstring (the string under it). `load_config(path, overrides)` builds the
dataclass tree from YAML (a file, or the name of a preset shipped in `mmsr/configs/`),
rejecting unknown keys with the file and dotted key in the message; `config_to_dict` gives
the full resolved config (logged at start, saved with every checkpoint).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any

import yaml

from mmsr.models.precision import check_matmul_dtype
from mmsr.rollout.engine import EngineConfig

LOSS_AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
SCHEDULES = ("cosine", "linear", "constant")
DRAWS = ("shuffle", "by_type")  # GRPOConfig.draw
# SFTConfig.decision: where a world script decides between answering and searching.
# "flag": every question by whether the model can name the flag; "fact": an attribute
# question in words of its own, right after its topic (`mmsr.train.sft.fact_decision`);
# "flag-fact": first the flag's words, then, after a flag it names, the fact's words.
DECISIONS = ("flag", "fact", "flag-fact")


def check_decision(decision: str) -> None:
    if decision not in DECISIONS:
        raise ValueError(f"SFT decision {decision!r} is not one of {DECISIONS}")


@dataclass
class ModelOptions:
    """Which policy to train and which of its parameters move."""

    policy: str = "nano"
    """'nano' or a local Qwen-VL checkpoint folder (mmsr never downloads)."""
    device: str | None = None
    """'cpu', 'cuda', 'cuda:1'; None: the GPU when there is one."""
    dtype: str | None = None
    """'fp32', 'bf16'; None: bf16 on CUDA, fp32 on CPU."""
    matmul_dtype: str = "fp32"
    """'bf16': SFT's and GRPO's update forward and backward run their matmuls in bf16 under
    torch.autocast while weights, gradients, optimizer state and the LM head stay in
    `dtype` (mmsr.models.precision); 'auto': bf16 where the device multiplies bf16 in
    hardware (AVX512-BF16 / AMX CPUs, GPUs), else fp32. Rollouts keep `dtype`, so GRPO's
    ratio also sees the rounding (docs/RESULTS.md, "Mixed precision, side by side")."""
    lora: bool = False
    """Train LoRA adapters (peft) on the language model instead of its full weights."""
    lora_rank: int = 16
    """LoRA rank r."""
    lora_alpha: int = 32
    """LoRA scale numerator (the update is alpha / r * B A)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input (0 keeps updates deterministic)."""
    lora_targets: list[str] = field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
    )
    """Language-model linear layers that get adapters (names inside each decoder layer)."""
    freeze_layers: int = 0
    """Freeze the token embeddings and the lowest N decoder layers (0: none frozen)."""
    freeze_vision: bool = True
    """Freeze the vision tower and merger (the paper's search skills live in the LM)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, ~30% more compute)."""

    def __post_init__(self) -> None:
        check_matmul_dtype(self.matmul_dtype)


@dataclass
class OptimOptions:
    """AdamW and its learning-rate schedule."""

    lr: float = 1e-6
    """Peak learning rate (official MMSearch-R1 script: 2e-6 for 7B full fine-tuning)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    beta1: float = 0.9
    """AdamW first-moment decay."""
    beta2: float = 0.999
    """AdamW second-moment decay."""
    eps: float = 1e-8
    """AdamW denominator epsilon."""
    warmup_steps: int = 0
    """Optimizer steps of linear warm-up from 0 to `lr`."""
    schedule: str = "constant"
    """After warm-up: 'constant', 'linear' or 'cosine' decay to `min_lr_ratio * lr`."""
    min_lr_ratio: float = 0.0
    """Floor of the decay as a fraction of `lr`."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (<= 0: no clipping)."""

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule {self.schedule!r} is not one of {SCHEDULES}")


@dataclass
class GRPOOptions:
    """The GRPO objective (defaults: the official MMSearch-R1 veRL script where it has one)."""

    group_size: int = 4
    """Trajectories sampled per prompt (n); advantages are normalised within each group."""
    norm_adv_by_std: bool = True
    """Divide group-centred rewards by the group std (False: Dr. GRPO, centring only)."""
    adv_std_floor: float = 0.0
    """With `norm_adv_by_std`: divide by at least this, not by a smaller group std (0: the
    std as it is). A group whose rewards differ only by a small bonus or penalty (mmsr's
    0.09 for searching, in a group right every time) has a std of ~0.05, so dividing by it
    makes that penalty weigh as much as a wrong answer; with a floor of 0.1 it weighs half
    as much, while groups split between right and wrong (std ~0.5) are unchanged. Not in
    the paper (docs/RESULTS.md, stop 32)."""
    clip_ratio_low: float = 0.2
    """PPO clip: the ratio is kept >= 1 - clip_ratio_low."""
    clip_ratio_high: float = 0.2
    """PPO clip: the ratio is kept <= 1 + clip_ratio_high (DAPO raises it to 0.28)."""
    kl_coef: float = 0.001
    """Weight of the k3 KL to the frozen reference in the loss (0: no reference forward)."""
    entropy_coef: float = 0.0
    """Weight of an entropy bonus (veRL default 0)."""
    loss_agg: str = "token-mean"
    """Loss aggregation: 'token-mean', 'seq-mean-token-mean' or 'seq-mean-token-sum'."""
    ppo_epochs: int = 1
    """Optimizer passes over each batch of trajectories (one optimizer step per pass)."""
    micro_batch_size: int = 4
    """Trajectories per forward/backward; gradients accumulate over micro-batches."""
    micro_batch_tokens: int = 0
    """If > 0, also cap a micro-batch's padded size (rows x its longest trajectory) at this
    many tokens (veRL's dynamic batch size): trajectories of very different lengths (an
    answer alone vs five thumbnails) then run in separate forwards instead of all padded
    to the longest. 0: by count only."""
    replay_trunk: bool = True
    """With frozen bottom layers (`model.freeze_layers`, frozen embeddings and vision):
    the rollout engine records their output while sampling and the update replays it for
    the policy and the reference instead of recomputing those layers (memory: tokens x
    hidden size per trajectory until the update; the result differs from a recompute only
    by the sampler's own rounding, which old_logp already carries)."""
    recompute_old_logp: bool = False
    """Recompute old_logp with a training-layout forward instead of the sampler's values."""
    forced_search: int = 0
    """Decision exploration (not in the paper; 0: off): the first `forced_search` rollouts
    of every group reason freely and then make an image search in their first turn
    (`mmsr.rollout.forcing.DecisionForcer`); the forced tokens are trained on like sampled
    ones, with the policy's own log-prob of them. The step's rollout metrics (reward,
    accuracy, search ratio) are those of the free rollouts; `forced_search_acc` /
    `forced_search_reward` those of these ones."""
    forced_answer: int = 0
    """Decision exploration: the next `forced_answer` rollouts of every group reason and then
    answer at once (`<answer>` is forced, the answer is the model's). With both, every group
    holds both decisions, so its advantages say whether searching paid on that question;
    forcing search alone drove nano to search always (docs/RESULTS.md, stop 30).
    Metrics: `forced_answer_acc` / `forced_answer_reward`."""
    forced_at: str = "action"
    """Where the forced rollouts' decision is forced: 'action' (the tags after the model's
    own reasoning), or 'reasoning': the second sentence of the first turn's reasoning starts
    with the words mmsr's SFT scripts decide with ("I cannot tell which flag this is" /
    "This is the flag of"), and the model writes the rest of the turn. For policies SFT'd
    on those scripts (nano): after a reasoning that already chose, a forced action is no
    test of the other choice (stop 30, docs/RESULTS.md)."""

    def __post_init__(self) -> None:
        forced = self.forced_search + self.forced_answer
        if min(self.forced_search, self.forced_answer) < 0 or forced >= self.group_size:
            raise ValueError(
                f"grpo.forced_search {self.forced_search} + grpo.forced_answer "
                f"{self.forced_answer} must lie in [0, group_size {self.group_size}): at "
                "least one rollout per group must be the policy's own"
            )
        from mmsr.rollout.forcing import FORCED_AT

        if self.forced_at not in FORCED_AT:
            raise ValueError(f"grpo.forced_at {self.forced_at!r} is not one of {FORCED_AT}")
        if self.loss_agg not in LOSS_AGGREGATIONS:
            raise ValueError(f"grpo.loss_agg {self.loss_agg!r} is not one of {LOSS_AGGREGATIONS}")
        if self.group_size < 1 or self.micro_batch_size < 1 or self.ppo_epochs < 1:
            raise ValueError("grpo.group_size, micro_batch_size and ppo_epochs must be >= 1")
        if self.adv_std_floor < 0:
            raise ValueError(f"grpo.adv_std_floor must be >= 0, got {self.adv_std_floor}")
        if self.micro_batch_tokens < 0:
            raise ValueError(f"grpo.micro_batch_tokens must be >= 0, got {self.micro_batch_tokens}")


@dataclass
class RunOptions:
    """Where outputs go, how often, and what is logged."""

    out: str = "runs/grpo"
    """Run folder: metrics.jsonl, config.yaml, checkpoints/, final/, tensorboard/."""
    seed: int = 0
    """Seed of data order, rollouts, LoRA init and dropout."""
    save_every: int = 50
    """Write a resumable checkpoint every N steps (and at the end)."""
    keep_checkpoints: int = 2
    """Keep only the newest N checkpoints (0: keep all)."""
    tensorboard: bool = True
    """Also write metrics as TensorBoard scalars."""
    wandb_project: str = ""
    """Also log to this Weights & Biases project ('' : off; needs `wandb` installed)."""
    save_final: bool = True
    """Save the final (LoRA-merged) model in save_pretrained layout under out/final."""
    save_rollouts: bool = False
    """Also write every rollout (turns, tool calls, reward, question) to out/rollouts.jsonl,
    one line each, for looking at what GRPO sampled and rewarded step by step."""


@dataclass
class GRPOConfig:
    """`mmsr train grpo`."""

    data: str = "world:train"
    """Training questions: world:train|val|test|all, or an FVQA .parquet / .jsonl file."""
    steps: int = 100
    """GRPO steps (one rollout batch and `grpo.ppo_epochs` optimizer steps each)."""
    prompts_per_step: int = 8
    """Questions per step; the batch holds prompts_per_step * grpo.group_size trajectories."""
    draw: str = "shuffle"
    """How the questions are drawn: 'shuffle' (each pass over the data in a new seeded
    order: types come up as often as they hold questions), or 'by_type' (round-robin over
    the question types, `mmsr.eval.records.question_type`, each type's questions in seeded
    cycles: every type comes up equally often, a rare one as often as a common one)."""
    search_config: str | None = None
    """Search config YAML (None: local world backends; 'none': no tools, every search
    returns an error observation)."""
    reward: dict[str, Any] = field(default_factory=dict)
    """RewardConfig options (mmsr.reward), e.g. {search_penalty: 0.1, alpha: 0.1}."""
    model: ModelOptions = field(default_factory=ModelOptions)
    """The policy and what trains."""
    optim: OptimOptions = field(default_factory=lambda: OptimOptions(lr=1e-6))
    """AdamW and schedule."""
    grpo: GRPOOptions = field(default_factory=GRPOOptions)
    """The objective."""
    engine: EngineConfig = field(default_factory=EngineConfig)
    """Rollout budget and sampling (mmsr.rollout.engine.EngineConfig)."""
    run: RunOptions = field(default_factory=RunOptions)
    """Outputs."""

    def __post_init__(self) -> None:
        if self.draw not in DRAWS:
            raise ValueError(f"draw {self.draw!r} is not one of {DRAWS}")
        if self.grpo.forced_search and self.engine.max_image_search < 1:
            raise ValueError(
                f"grpo.forced_search {self.grpo.forced_search} forces image searches, but "
                "engine.max_image_search is 0"
            )


@dataclass
class SFTConfig:
    """`mmsr train sft`: masked NLL on trajectories (world-synthesised or from a file)."""

    data: str = "world:train"
    """Questions to synthesise trajectories for (world:...), or a trajectory .jsonl to distil."""
    n_trajectories: int = 256
    """World synthesis: trajectories to build (questions are drawn with replacement)."""
    p_direct: float = 0.3
    """World synthesis: share of scripts that answer at once (each drawn for a question
    the model answers right on its own; the others search)."""
    steps: int = 50
    """Optimizer steps."""
    batch_size: int = 8
    """Trajectories per optimizer step."""
    micro_batch_size: int = 4
    """Trajectories per forward/backward (gradient accumulation)."""
    trust_own_name: bool = True
    """World synthesis: a flag the model names right, with a fact it does not know, is
    looked up by a text search for its own name ("text" plan); False: after an image
    search, as for a flag it cannot name ("image+text"), since a model that names a flag
    is not always right (`mmsr.train.sft.plan_from_knowledge`)."""
    decision: str = "flag"
    """World synthesis: the words a script decides to answer or search with
    (`DECISIONS`). 'flag': every question by whether the model can name the
    flag ("This is the flag of ..." / "I cannot tell which flag this is, so I search with
    the image."); 'fact': an attribute question by whether it knows the fact, in words
    that follow its topic ("Its capital I know. This is the flag of ..." / "Its capital I
    look up: first the flag, with the image."), apart from the flag questions' words;
    'flag-fact': both in turn, an attribute question first by the flag ("I cannot tell which
    flag this is, ..." / "This is the flag of X."), then, after a flag it names, by the fact
    ("Its capital I know." / "Its capital I look up: first the flag, with the image.")."""
    keep_wrong_names: bool = False
    """World synthesis, 'flag-fact' decision: an attribute question whose flag the model
    names wrongly keeps its own name before the fact's decision ("This is the flag of
    Israel. Its internet country code I look up: first the flag, with the image."), and
    the turn after the image search names the flag the results show (Nauru). False: such
    a question takes the flag's words ("I cannot tell which flag this is, ..."), so every
    script that names a flag before its image search names it right, and nano learned to
    repeat its own name after the search: stop 37's GRPO rollouts looked up the fact of
    their own wrong name in 21 of the 73 text searches on hard questions. True (stop
    38): 0 of 107, and the GRPO model met target 2, but said
    "Its continent I look up" after nearly every name and searched 73.7% of the test
    questions (docs/RESULTS.md, stop 38); so off by default."""
    keep_wrong_names_except: list[str] = field(default_factory=list)
    """With `keep_wrong_names`: the question types (world qtypes, e.g. 'continent') whose
    wrong names are not kept: their scripts take the flag's words ("I cannot tell which
    flag this is, ..."), as without the option. Base nano gets most continents right
    without a search, yet with every wrong name kept the stop 38 model looked up the
    continent after nearly every name it said. Measured (stop 39, continent excepted):
    the GRPO model searched 92.1% of the test questions, opening the continent and flag
    questions alike with "I cannot tell" (docs/RESULTS.md)."""
    answer_weight: float = 1.0
    """Loss weight of the tokens inside <answer>...</answer> (the closing tag included),
    against 1 for every other sampled token; the loss stays a weighted mean. Above 1 it
    stresses what the answer tag says over the turns' other text."""
    words: str | None = None
    """World synthesis: a `words.json` of an earlier SFT run of the same policy, whose
    recorded replies stand in for speaking again (each run saves its own)."""
    trunk_cache: bool = True
    """With frozen bottom layers (`model.freeze_layers`, frozen embeddings and vision):
    run them once per trajectory and replay their output on later passes (the same
    result, less compute; CPU memory ~ tokens x hidden size x 4 bytes over the set)."""
    search_config: str | None = None
    """Search config YAML for the replayed tool calls (None: local world backends)."""
    model: ModelOptions = field(default_factory=ModelOptions)
    """The policy and what trains."""
    optim: OptimOptions = field(default_factory=lambda: OptimOptions(lr=1e-4, warmup_steps=5))
    """AdamW and schedule."""
    engine: EngineConfig = field(default_factory=EngineConfig)
    """Budget of the replayed conversations."""
    run: RunOptions = field(default_factory=lambda: RunOptions(out="runs/sft"))
    """Outputs."""

    def __post_init__(self) -> None:
        if not self.answer_weight > 0:
            raise ValueError(f"answer_weight must be > 0, got {self.answer_weight}")
        check_decision(self.decision)
        if self.keep_wrong_names and self.decision != "flag-fact":
            raise ValueError(
                "keep_wrong_names keeps a name before the fact's decision, which only the "
                f"'flag-fact' decision says; decision is {self.decision!r}"
            )
        check_kept_names_except(self.keep_wrong_names_except, self.keep_wrong_names)


def check_kept_names_except(
    qtypes: list[str],
    keep_wrong_names: bool,
    option: str = "keep_wrong_names_except",
    needs: str = "keep_wrong_names",
) -> None:
    """`SFTConfig.keep_wrong_names_except`: a list of attribute question types of the
    world, and only with `keep_wrong_names` (without it no wrong name is kept anyway);
    errors name the options as `option` and `needs`."""
    from mmsr.world.questions import FLAG, QUESTION_TYPES

    if isinstance(qtypes, str):  # YAML `continent` for `[continent]`: not its letters
        raise ValueError(f"{option}: a list of question types, not the string {qtypes!r}")
    if qtypes and not keep_wrong_names:
        raise ValueError(f"{option} {list(qtypes)} needs {needs}: without it no wrong name is kept")
    attributes = [t for t in QUESTION_TYPES if t != FLAG]
    unknown = [t for t in qtypes if t not in attributes]
    if unknown:
        raise ValueError(f"{option}: unknown question type(s) {unknown}; choose from {attributes}")


# ------------------------------------------------------------------------- YAML loading
def build_dataclass(cls, values: dict[str, Any] | None, where: str = ""):
    """`cls(**values)` recursively; unknown keys raise naming `where.key`."""
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(
            f"{where or cls.__name__}: unknown option(s) {unknown}; known: {sorted(names)}"
        )
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = build_dataclass(hint, value, f"{where}.{name}" if where else name)
        else:
            value = _coerce(value, hint, f"{where}.{name}" if where else name)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where or cls.__name__}: {err}") from err


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check a scalar against its field type; YAML reads `3e-5` as text, so floats written
    that way are converted."""
    allowed = (
        typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, UnionType) else (hint,)
    )
    if value is None:
        if type(None) in allowed:
            return None
        raise ValueError(f"{key}: must not be null")
    if float in allowed and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{key}: {value!r} is not a number") from None
    scalars = [t for t in allowed if t in (bool, int, str)]
    if scalars and not any(type(value) is t for t in scalars):
        names = "/".join(t.__name__ for t in scalars)
        raise ValueError(f"{key}: {value!r} is not {names}")
    return value


def set_dotted(values: dict[str, Any], dotted: str, value: Any) -> None:
    """values['a']['b'] = value for dotted 'a.b' (creating dicts on the way)."""
    node = values
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {dotted!r}: {key!r} is not a section")
    node[leaf] = value


PRESETS = Path(__file__).resolve().parents[1] / "configs"
"""The shipped YAML configs (package data), loadable by name: `--config nano_cpu`."""


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def resolve_config(path: str | Path) -> Path:
    """`path` itself when it is a file, else the shipped preset it names ("nano_cpu" or
    "nano_cpu.yaml", no folder part: a mistyped path to one's own file must not silently
    become a preset)."""
    path = Path(path)
    if path.is_file():
        return path
    preset = PRESETS / path.with_suffix(".yaml").name
    if path.parent == Path(".") and preset.is_file():
        return preset
    raise FileNotFoundError(
        f"config {path}: no such file, and not a shipped preset ({', '.join(preset_names())})"
    )


def load_config(cls, path: str | Path | None, overrides: list[str] | None = None):
    """Config `cls` from the YAML file at `path` or the preset it names (None: defaults)
    plus `key.sub=value` overrides (values parsed as YAML: `grpo.kl_coef=0`,
    `model.lora=true`)."""
    values: dict[str, Any] = {}
    where = cls.__name__
    if path is not None:
        path = resolve_config(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"config {path} is not valid YAML: {err}") from err
        if not isinstance(values, dict):
            raise ValueError(f"config {path}: top level must be a mapping")
        where = str(path)
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        set_dotted(values, key.strip(), yaml.safe_load(raw))
    return _build_top(cls, values, where)


def _build_top(cls, values: dict[str, Any], where: str):
    try:
        return build_dataclass(cls, values, "")
    except ValueError as err:
        raise ValueError(f"config {where}: {err}") from err


def config_to_dict(config) -> dict[str, Any]:
    """The full resolved config as plain data (YAML/JSON-ready)."""
    return dataclasses.asdict(config)


def config_to_yaml(config) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)
