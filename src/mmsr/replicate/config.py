"""The one config of the nano replication (`bench/replicate_nano.py`).

Default sizes are chosen for under 2 hours on 2 CPU cores with the search indexes already
built (`mmsr search index`, ~11-15 min once). Where the time goes, measured in the run of
2026-12-06, stop 27 (docs/RESULTS.md, "The replication in 1 h 44 min"; bf16 matmuls in
the updates, rollouts and evaluations from a bf16 copy; nothing else on the machine):

- balance: the preliminary model answers each pooled question `balance_k` times without
  search, batched: world:test, all 402 questions, ~9 min; world:train, 512 of its 1,389,
  ~10 min. Nano knows few answers (~4% of the questions are search_free), so the pools
  must be large for a balanced set of a few dozen. The default sets ship in
  `mmsr/replicate/sets/` and are copied when the options and the eye match (`rebalance`),
  or drawn again from their recorded decisions in seconds when only the ratio differs;
- SFT: nano states what it knows for 480 questions (~7 min; its words ship in
  `sets/sft-words/` and are read back with the shipped eye), the scripts are replayed
  with the tools (2 s), then 80 steps of 8 trajectories (the frozen layers' output is
  replayed after the first pass): 26 min;
- GRPO: 16 steps x 4 questions x 4 rollouts, 15-26 min a run (it follows how much nano
  searches): three runs (main, no penalty, unbalanced), 63 min;
- evaluation on the balanced test set (38 questions): 10 runs, 14 min (RAG ~2.7 min
  each, on demand 1-2.3 min, direct ~25 s).
So 1 h 44 min with the shipped sets and words (`sample_dtype` and `matmul_dtype` 'auto'
on a CPU with bf16 units; fp32 is much slower); rebalancing adds ~20 min, speaking ~7 min.

`quick()` gives sizes that run in a few minutes (a wiring check, not a result).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from dataclasses import dataclass

from mmsr.models.precision import check_matmul_dtype
from mmsr.stages import require_positive


@dataclass
class ReplicateConfig:
    """The nano replication of MMSearch-R1's findings: align, balance, SFT, GRPO, ablations,
    evaluation in three modes, results."""

    out: str = "runs/replicate-nano"
    """Run folder: one subfolder per stage, results.md / results.json / plots/."""
    policy: str = "nano"
    """'nano' or a local Qwen-VL checkpoint folder (then `align` does not apply)."""
    align: bool = False
    """Retrain nano's eye with `mmsr train align` defaults (~65 min on 2 cores) instead of
    using the shipped one."""
    train_pool: int = 512
    """world:train questions (seeded subset) the preliminary model classifies; the
    balanced and the unbalanced train sets are drawn from them."""
    test_pool: int = 402
    """world:test questions (seeded subset) balanced into the test set."""
    rebalance: bool = False
    """Balance world:train and world:test here even when the shipped default sets
    (mmsr/replicate/sets/, made by a full run with these defaults and the shipped eye) fit
    the options; they are used only when every balancing option and the eye match."""
    balance_k: int = 4
    """Sampled answers without search per question (direct mode, T = 1)."""
    balance_threshold: int = 2
    """Right at least this many of `balance_k` times: search_free."""
    balance_rag_k: int = 0
    """RAG answers per search_required question; dropped when none is right (0: keep all).
    0 by default: nano before SFT answers in free sentences and was right in none of 6
    RAG answers in a smoke run, so dropping would empty the set (the paper uses it)."""
    target_ratio: float = 1.0
    """search_required : search_free of the balanced test set."""
    train_target_ratio: float = 1.0
    """search_required : search_free of the balanced train set (GRPO's data), drawn from the
    shipped sets' recorded decisions in seconds when the other balancing options match
    them (the paper's FVQA-train: ~3,400 : ~1,600, 2.125). Measured in stop 29, GRPO main
    from the same SFT model: at 1.0 (28 questions) it searched for 15.8% of the test
    questions, at 2.125 (44) for 89.5%, and at 1.5 (35) it searched in every training
    rollout from step 3 on (docs/RESULTS.md)."""
    balance_lenient: bool = True
    """Judge an answer without an <answer> tag by its last turn's text: the preliminary
    model is nano before SFT, which knows facts but not the tag format."""
    balance_match: str = "subem"
    """How a preliminary answer is judged right ('em' or 'subem'; subem suits sentences)."""
    balance_max_new_tokens: int = 32
    """Tokens per turn of the preliminary model's answers."""
    train_rag_check: int = 0
    """After SFT, the SFT model answers this many of the train pool's search_required
    questions (a seeded draw) once, greedy, in the RAG workflow; those it gets wrong (exact
    match, as GRPO's reward) are dropped and the GRPO runs train on sets drawn again from
    the rest (`mmsr.replicate.recheck`: the FVQA method's drop of the unanswerable, which
    nano before SFT cannot run; ~7 min for 96). 0: off, GRPO trains on the balance
    stage's sets."""
    sft_steps: int = 80
    """SFT optimizer steps of 8 trajectories. The demo's 10 steps (loss still 0.43 and
    falling) left nano unable to answer after search results: it never searched at T = 0
    and searched in ~6% of GRPO's T = 1 rollouts, though 70% of its SFT plans search.
    30 steps still left the read step weak (2 of 28 right with the gold in the results of
    19; `bench/search_chain.py`); 40 steps met 4 of the 7 targets, 80 steps (four passes
    over the 160 trajectories) met 6 (docs/RESULTS.md)."""
    sft_trajectories: int = 160
    """World-synthesised SFT trajectories (random plans over world:train, as in the demo)."""
    sft_answer_weight: float = 1.0
    """SFT loss weight of the answer tags' tokens (`SFTConfig.answer_weight`; 1: every
    sampled token alike)."""
    sft_trust_own_name: bool = False
    """SFT scripts look up the fact of a flag nano names right by a text search for its own
    name (`SFTConfig.trust_own_name`); off by default since stop 27: after an image search.
    In stop 26's run the GRPO model's text searches for its own name answered 1 of 7 test
    questions right (it named 2 of the 7 flags right), while the no-penalty model's image
    then text searches answered 20 of 28; with image first, stop 27's GRPO model answered
    65.8% on demand against 47.4% (docs/RESULTS.md)."""
    sft_decision: str = "flag"
    """The words SFT scripts decide to answer or search with (`SFTConfig.decision`):
    'flag', every question by whether nano names the flag; 'fact', an attribute question
    in words of its own after its topic ("Its capital I know." / "Its capital I look up:
    ..."), so GRPO's push on the flag questions' decision does not carry to the others
    (docs/RESULTS.md, stops 34-35); 'flag-fact', the flag's words, then after a flag nano
    names the fact's ("This is the flag of X. Its capital I look up: ..."), so a continent
    follows from the flag while a capital can still be looked up (stop 36)."""
    sft_keep_wrong_names: bool = False
    """With --sft-decision flag-fact: SFT scripts keep nano's wrong name of a flag before
    the fact's decision and name the flag the image search shows after it
    (`SFTConfig.keep_wrong_names`), so the name read from the results overrules nano's
    own; stop 37's GRPO model repeated its own wrong name after the image search. Stop
    38's run with it met target 2 but not 1 and 6: GRPO main searched 73.7% of the test
    questions, every continent question included (docs/RESULTS.md)."""
    sft_keep_wrong_names_except: str = ""
    """With --sft-keep-wrong-names: comma-separated question types whose wrong names are
    not kept (`SFTConfig.keep_wrong_names_except`), e.g. 'continent', whose scripts then
    decide by the flag as without the option. Stop 39's GRPO main with 'continent'
    searched 92.1% of the test questions (docs/RESULTS.md)."""
    grpo_steps: int = 16
    """GRPO steps of every run (main and ablations)."""
    grpo_lr: float = 5e-5
    """GRPO learning rate (peak; warm-up, cosine). the nano_cpu preset's 1e-5 barely moved
    nano in 16 steps (KL to the reference 0.002-0.004, behaviour unchanged)."""
    grpo_temperature: float = 0.7
    """Sampling temperature of GRPO's rollouts (the preset and the paper: 1.0). Nano's
    long tail at 1.0 breaks its search chain: through the RAG workflow with its own query,
    the SFT model answered 6 of 38 test questions right at T = 1.0 and 11 at T = 0.7
    (`bench/search_chain.py`, docs/RESULTS.md), so at 1.0 searching rarely pays and GRPO
    learns not to search."""
    prompts_per_step: int = 4
    """GRPO questions per step."""
    group_size: int = 4
    """GRPO trajectories per question."""
    search_penalty: float = 0.1
    """The main run's search penalty (the no-penalty ablation uses 0)."""
    grpo_std_norm: bool = True
    """Divide each GRPO advantage by its group's reward std (the GRPO paper, veRL's
    `norm_adv_by_std_in_grpo`). False: rewards minus the group mean only (Dr. GRPO), so
    the search penalty weighs what it says: divided by the std, a group right every time
    that searched in some rollouts gets advantages of +-0.87 from the 0.09 penalty, as
    large as a group split between right and wrong answers. Measured in stop 28: without
    the division GRPO main searched in every rollout from step 5 on (docs/RESULTS.md)."""
    grpo_std_floor: float = 0.0
    """The least std GRPO divides a group's advantages by (`GRPOOptions.adv_std_floor`; 0:
    the group's std as it is). A group right every time whose rollouts differ only by the
    search penalty has a std of ~0.05, so its 0.09 weighs as much as a wrong answer; with
    a floor of 0.1 it weighs half as much, and groups split between right and wrong answers
    (std ~0.5) are unchanged. Between dividing (under-searching, stop 27) and not dividing
    (always searching, stop 28)."""
    grpo_kl_coef: float = 0.001
    """Weight of the k3 KL to the SFT model in GRPO's loss (the preset and the paper: 0.001;
    token mean, so one decision token's KL is diluted by the whole reply's)."""
    grpo_forced_search: int = 0
    """Rollouts per GRPO group forced to make an image search in their first turn, after
    their own reasoning (`GRPOOptions.forced_search`; not in the paper). Alone (stop 30,
    1 of 4) it drove GRPO main to searching in every free rollout from step 5 on: on a
    question it knows, no rollout answered at once to show that searching cost reward."""
    grpo_forced_answer: int = 0
    """Rollouts per GRPO group forced to answer at once after their own reasoning
    (`GRPOOptions.forced_answer`): with `grpo_forced_search`, every group holds both
    decisions, where four free rollouts usually all make the same one and the decision
    drifts with the draws (stops 28-29). Training metrics are the free rollouts'."""
    grpo_forced_at: str = "action"
    """Where those rollouts' decision is forced (`GRPOOptions.forced_at`): 'action' (after
    their own reasoning; stop 30: the reasoning had mostly chosen already) or 'reasoning'
    (its second sentence starts with the SFT scripts' "I cannot tell which flag this is" /
    "This is the flag of", the rest is the model's). Stop 31, 1 + 1 of 4 forced at the
    reasoning: the decision stopped drifting to an end at train ratio 1.0, but the greedy
    model still under-searched (docs/RESULTS.md, "Forcing the decision where nano makes it")."""
    grpo_draw: str = "shuffle"
    """How GRPO draws its questions (`GRPOConfig.draw`): 'shuffle', or 'by_type' (round-robin
    over the question types). Nano decides to search by the question type (stop 33), and
    under 'shuffle' the types it must learn to search for (capital, currency, independence,
    largest city) came up in 14 of stop 33's 64 draws, against 24 for flag questions."""
    grpo_seed: int | None = None
    """Seed of GRPO's question draw, rollouts and LoRA init (`RunOptions.seed`) in every GRPO
    run; None: `seed`. The balance sets, SFT scripts and evaluations keep `seed`, so runs
    that differ only here measure how far GRPO alone moves the results from one SFT model."""
    max_new_tokens: int = 96
    """Tokens per model turn in GRPO rollouts and evaluations."""
    freeze_layers: int = 22
    """Lowest decoder layers kept frozen in SFT and GRPO (nano has 30)."""
    matmul_dtype: str = "auto"
    """'bf16': SFT's and GRPO's updates multiply in bf16 (torch.autocast; weights, gradients
    and the LM head stay fp32), 1.7x faster on a CPU with bf16 units; 'fp32': everything
    in fp32; 'auto': bf16 where the device multiplies bf16 in hardware, else fp32."""
    sample_dtype: str = "auto"
    """'bf16': rollouts and evaluations run on a bf16 copy of the policy's weights (the LM
    head and log-probs stay fp32; `EngineConfig.sample_dtype`), 1.45x faster rollouts on
    a CPU with bf16 units (`bench/sample_dtype.py`); 'auto' (the default since stop 27):
    bf16 where the device multiplies bf16 in hardware; 'fp32': the policy itself."""
    ablations: bool = True
    """Also run the ablations: GRPO without search penalty, GRPO on unbalanced data."""
    rag_question: bool = False
    """Also evaluate the SFT and main models in a second RAG variant whose text query is
    the question itself (retrieve-then-read). Off by default: the questions never name
    the country, so it found the answer for 2 of 38 (5.3%) against 34-37% for the paper's
    workflow, where the model writes the query after the image results (`rag-model`),
    and it cost ~7 of the 2 hours."""
    fresh_processes: bool = True
    """Run each training stage (SFT, every GRPO run) in a fresh Python process, so that
    its memory goes back to the system before the next stage: the process of stop 26's
    run held 14 GB after them, and its evaluations ran ~30% slower than in a fresh
    process (3 min 26 s against 4 min 52 s for the same SFT RAG run)."""
    search_config: str | None = None
    """Search config YAML (None: the local world backends; 'none': no tools)."""
    seed: int = 0
    """Seed of the pools, balancing, SFT scripts, data order and rollouts."""
    device: str | None = None
    """'cpu', 'cuda', ...; None: the GPU when there is one."""
    fresh: bool = False
    """Delete the replication's stage folders under `out` first."""

    def __post_init__(self) -> None:
        require_positive(self, ("train_pool", "test_pool", "balance_k", "balance_threshold",
                                "balance_max_new_tokens", "sft_steps", "sft_trajectories",
                                "grpo_steps", "prompts_per_step", "group_size",
                                "max_new_tokens"))  # fmt: skip
        if self.balance_threshold > self.balance_k:
            raise ValueError(
                f"--balance-threshold {self.balance_threshold} must be <= --balance-k "
                f"{self.balance_k}"
            )
        if self.train_rag_check < 0:
            raise ValueError(f"--train-rag-check {self.train_rag_check} must be >= 0 (0: off)")
        if self.balance_rag_k < 0:
            raise ValueError(f"--balance-rag-k {self.balance_rag_k} must be >= 0")
        if not self.sft_answer_weight > 0:
            raise ValueError(f"--sft-answer-weight {self.sft_answer_weight} must be > 0")
        if self.grpo_temperature <= 0:
            raise ValueError(f"--grpo-temperature {self.grpo_temperature} must be > 0")
        if self.grpo_std_floor < 0:
            raise ValueError(f"--grpo-std-floor {self.grpo_std_floor} must be >= 0")
        if self.grpo_kl_coef < 0:
            raise ValueError(f"--grpo-kl-coef {self.grpo_kl_coef} must be >= 0")
        forced = self.grpo_forced_search + self.grpo_forced_answer
        if min(self.grpo_forced_search, self.grpo_forced_answer) < 0 or forced >= self.group_size:
            raise ValueError(
                f"--grpo-forced-search {self.grpo_forced_search} + --grpo-forced-answer "
                f"{self.grpo_forced_answer} must lie in [0, --group-size {self.group_size})"
            )
        from mmsr.rollout.forcing import FORCED_AT

        if self.grpo_forced_at not in FORCED_AT:
            raise ValueError(f"--grpo-forced-at {self.grpo_forced_at!r}: choose one of {FORCED_AT}")
        from mmsr.train.config import DECISIONS, DRAWS, check_kept_names_except

        if self.sft_decision not in DECISIONS:
            raise ValueError(f"--sft-decision {self.sft_decision!r}: choose one of {DECISIONS}")
        if self.sft_keep_wrong_names and self.sft_decision != "flag-fact":
            raise ValueError(
                "--sft-keep-wrong-names keeps a name before the fact's decision: it needs "
                f"--sft-decision flag-fact, not {self.sft_decision!r}"
            )
        check_kept_names_except(
            self.kept_names_except,
            self.sft_keep_wrong_names,
            "--sft-keep-wrong-names-except",
            "--sft-keep-wrong-names",
        )
        if forced and self.grpo_forced_at == "reasoning" and self.sft_decision != "flag":
            raise ValueError(
                "--grpo-forced-at reasoning forces the 'flag' decision's words; "
                f"--sft-decision {self.sft_decision!r} decides attribute questions with others"
            )
        if self.grpo_seed is not None and self.grpo_seed < 0:
            raise ValueError(f"--grpo-seed {self.grpo_seed} must be >= 0")
        if self.grpo_draw not in DRAWS:
            raise ValueError(f"--grpo-draw {self.grpo_draw!r}: choose one of {DRAWS}")
        if self.grpo_lr <= 0:
            raise ValueError(f"--grpo-lr {self.grpo_lr} must be > 0")
        for name in ("target_ratio", "train_target_ratio"):
            if getattr(self, name) <= 0:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} {getattr(self, name)} must be > 0")
        if not 0 <= self.search_penalty <= 1:
            raise ValueError(f"--search-penalty {self.search_penalty} must lie in [0, 1]")
        if self.balance_match not in ("em", "subem"):
            raise ValueError(f"--balance-match {self.balance_match!r} must be 'em' or 'subem'")
        check_matmul_dtype(self.matmul_dtype)
        check_matmul_dtype(self.sample_dtype, "--sample-dtype")
        if self.align and self.policy != "nano":
            raise ValueError(f"--align trains nano's eye; --policy {self.policy!r} is not nano")

    @property
    def kept_names_except(self) -> list[str]:
        """`sft_keep_wrong_names_except` as a list of question types."""
        return [t.strip() for t in self.sft_keep_wrong_names_except.split(",") if t.strip()]


QUICK = {
    "train_pool": 12, "test_pool": 8, "balance_k": 2, "balance_threshold": 1,
    "balance_max_new_tokens": 24, "sft_steps": 2, "sft_trajectories": 8, "grpo_steps": 2,
    "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 48,
}  # fmt: skip
"""`--quick`: every stage runs, in minutes; the numbers mean nothing."""


def field_docs(cls) -> dict[str, str]:
    """Each dataclass field's docstring (the string under it), for `--help`."""
    docs: dict[str, str] = {}
    body = ast.parse(inspect.getsource(cls)).body[0].body
    for node, after in zip(body, body[1:], strict=False):
        documented = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and documented:
            docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]
