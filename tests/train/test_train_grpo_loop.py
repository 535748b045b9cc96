"""The GRPO loop end to end on the tiny model: metrics, checkpoints, exact resume, final model."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from mmsr.data.record import Sample
from mmsr.models.policy import Policy
from mmsr.rollout.engine import EngineConfig
from mmsr.train.config import (
    GRPOConfig,
    GRPOOptions,
    OptimOptions,
    RunOptions,
    SFTConfig,
    load_config,
    preset_names,
)
from mmsr.train.loop import DataOrder, TypeRoundRobin, data_order, train_grpo
from mmsr.train.metrics import read_metrics

SAMPLES = [
    Sample(id=f"q{i}", question=f"What is {i} + {i}?", answer=str(2 * i), source="test/add")
    for i in range(5)
]


def tiny_config(out, steps=3) -> GRPOConfig:
    return GRPOConfig(
        data="unused",
        steps=steps,
        prompts_per_step=2,
        search_config="none",
        grpo=GRPOOptions(group_size=3, micro_batch_size=4, kl_coef=0.01),
        optim=OptimOptions(lr=1e-2, warmup_steps=1, schedule="cosine"),
        engine=EngineConfig(max_turns=2, max_new_tokens=6, batch_size=8, require_reason=False),
        run=RunOptions(
            out=str(out), save_every=1, keep_checkpoints=0, tensorboard=True, save_rollouts=True
        ),
    )


def fresh(policy) -> Policy:
    return Policy(model=copy.deepcopy(policy.model), processor=policy.processor, name="tiny")


def test_data_order_is_a_seeded_permutation_per_epoch():
    order = DataOrder(5, seed=3)
    first = order.take(3) + order.take(2)
    assert sorted(first) == list(range(5)) and order.state() == {"epoch": 1, "position": 0}
    again = DataOrder(5, seed=3)
    assert again.take(5) == first
    resumed = DataOrder(5, seed=3, epoch=0, position=3)
    assert resumed.take(4) == first[3:] + DataOrder(5, 3, epoch=1).take(2)


def test_by_type_draws_each_type_equally_often_and_cycles_within_a_type():
    types = ["flag"] * 6 + ["capital"] * 2 + ["anthem"]
    order = TypeRoundRobin(types, seed=1)
    drawn = order.take(9) + order.take(9)  # six rounds of the three types
    rounds = [{types[i] for i in drawn[r : r + 3]} for r in range(0, 18, 3)]
    assert all(kinds == {"flag", "capital", "anthem"} for kinds in rounds)
    flags = [i for i in drawn if types[i] == "flag"]
    capitals = [i for i in drawn if types[i] == "capital"]
    assert sorted(flags) == list(range(6))  # one cycle through the six flag questions
    assert sorted(capitals[:2]) == sorted(capitals[2:4]) == [6, 7]  # cycle after cycle
    assert order.state() == {"position": 18}
    resumed = TypeRoundRobin(types, seed=1)
    resumed.restore({"position": 5})
    assert resumed.take(13) == drawn[5:]
    assert TypeRoundRobin(types, seed=2).take(18) != drawn  # the seed sets the order
    with pytest.raises(ValueError, match="no questions"):
        TypeRoundRobin([], seed=0)


def test_draw_option_picks_the_order_and_unknown_draws_are_named():
    typed = [
        Sample(id=f"t{i}", question="?", answer="a", source="world", extra={"qtype": kind})
        for i, kind in enumerate(["flag", "flag", "capital"])
    ]
    assert isinstance(data_order(typed, "shuffle", 0), DataOrder)
    by_type = data_order(typed, "by_type", 0)
    assert sorted(by_type.take(2)) in ([0, 2], [1, 2])  # one flag, one capital
    # without a world qtype the data source's last part is the type: one type, one cycle
    assert sorted(data_order(SAMPLES, "by_type", 0).take(5)) == list(range(5))
    with pytest.raises(ValueError, match="draw 'typed' is not one of"):
        GRPOConfig(draw="typed")


@pytest.mark.slow
def test_resume_continues_exactly(tiny_policy, tmp_path):
    whole = train_grpo(tiny_config(tmp_path / "whole"), policy=fresh(tiny_policy), samples=SAMPLES)
    split = tmp_path / "split"
    train_grpo(tiny_config(split), policy=fresh(tiny_policy), samples=SAMPLES, stop_after=1)
    assert not (split / "final").exists()
    assert (split / "checkpoints" / "latest").read_text() == "step_000001"
    # as if killed after logging step 2 but before its checkpoint: the resumed run redoes
    # step 2 and must replace these lines, not log the step twice
    for name in ("metrics.jsonl", "rollouts.jsonl"):
        with (split / name).open("a") as log:
            log.write(json.dumps({"step": 2, "half-done": True}) + "\n")
    train_grpo(tiny_config(split), policy=fresh(tiny_policy), samples=SAMPLES)

    a, b = read_metrics(whole / "metrics.jsonl"), read_metrics(split / "metrics.jsonl")
    assert [r["step"] for r in a] == [1, 2, 3] and [r["step"] for r in b] == [1, 2, 3]
    rollouts_a = read_metrics(whole / "rollouts.jsonl")
    rollouts_b = read_metrics(split / "rollouts.jsonl")
    # every step's 2 prompts x 3 samples, each with its question and reward
    assert [r["step"] for r in rollouts_a] == [s for s in (1, 2, 3) for _ in range(6)]
    gold_of = {sample.question: [sample.answer] for sample in SAMPLES}
    assert all(r["golds"] == gold_of[r["question"]] for r in rollouts_a)
    assert {"score", "acc"} <= set(rollouts_a[0]["reward"]) and rollouts_a[0]["turns"]
    assert [(r["step"], r["answer"], r["turns"]) for r in rollouts_b] == [
        (r["step"], r["answer"], r["turns"]) for r in rollouts_a
    ]
    for ra, rb in zip(a, b, strict=True):
        for key in ("reward_mean", "response_length", "loss", "kl", "lr", "grad_norm"):
            assert ra[key] == pytest.approx(rb[key], abs=1e-6), (ra["step"], key)
    wa = load_file(whole / "checkpoints" / "step_000003" / "trainable.safetensors")
    wb = load_file(split / "checkpoints" / "step_000003" / "trainable.safetensors")
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], atol=1e-6, rtol=1e-5)
    state = json.loads((split / "checkpoints" / "step_000003" / "trainer_state.json").read_text())
    assert state["step"] == 3 and state["data_order"] == {"epoch": 1, "position": 1}
    # every metric the issue names is logged, under the variable's name
    for key in (
        "reward_mean", "reward_std", "acc", "format_rate", "search_ratio_image",
        "search_ratio_text", "kl", "clipfrac", "entropy", "response_length", "tokens_per_s", "lr",
    ):  # fmt: skip
        assert key in a[0]
    assert list((whole / "tensorboard").iterdir())

    from mmsr.models.loading import load_policy

    final = load_policy(whole / "final", device="cpu")
    saved = dict(final.model.named_parameters())
    for name, value in wa.items():
        torch.testing.assert_close(saved[name], value)


@pytest.mark.slow
def test_lora_run_saves_a_merged_final_model(tiny_policy, tmp_path):
    config = tiny_config(tmp_path / "lora", steps=1)
    config.model.lora, config.model.lora_rank, config.model.freeze_layers = True, 4, 1
    out = train_grpo(config, policy=fresh(tiny_policy), samples=SAMPLES)
    adapters = load_file(out / "checkpoints" / "step_000001" / "trainable.safetensors")
    assert adapters and all("lora_" in name and ".layers.1." in name for name in adapters)
    from mmsr.models.loading import load_policy

    final = load_policy(out / "final", device="cpu")
    assert not any("lora" in name for name, _ in final.model.named_parameters())


@pytest.mark.parametrize("lora", [False, True])
def test_bf16_sampling_follows_every_update(tiny_policy, tmp_path, lora):
    """With `engine.sample_dtype` bf16 the rollouts sample from a bf16 copy, which holds
    the trained weights after the run (its last update included); under LoRA, the
    adapters (zero-initialised B) that the updates trained."""
    from mmsr.models.precision import _SAMPLING_COPIES

    config = tiny_config(tmp_path / "bf16", steps=2)
    config.engine.sample_dtype = "bf16"
    config.grpo.entropy_coef = 0.1  # a gradient even where every reward is the same
    config.model.lora, config.model.lora_rank, config.model.freeze_layers = lora, 4, 1
    policy = fresh(tiny_policy)
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    train_grpo(config, policy=policy, samples=SAMPLES)
    twin = dict(_SAMPLING_COPIES[policy.model].named_parameters())
    if lora:  # the final model is merged in place; the copy still holds the adapters
        adapters = [p for n, p in twin.items() if "lora_B" in n]
        assert adapters and any(p.abs().sum() > 0 for p in adapters)
        return
    trained = [(n, p) for n, p in policy.model.named_parameters() if p.requires_grad]
    assert trained and any(not torch.equal(before[n], p) for n, p in trained)
    for name, param in trained:
        torch.testing.assert_close(twin[name], param.detach().to(torch.bfloat16))


def test_config_yaml_rejects_unknown_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("grpo:\n  kl_coef: 0.0\n  klcoef: 1\n")
    with pytest.raises(ValueError, match=r"c.yaml.*grpo.*klcoef"):
        load_config(GRPOConfig, path)
    path.write_text("grpo:\n  kl_coef: 0.0\nengine:\n  max_turns: 2\n")
    config = load_config(GRPOConfig, path, ["model.lora=true", "optim.lr=3e-5"])
    assert config.grpo.kl_coef == 0.0 and config.engine.max_turns == 2
    assert config.model.lora is True and config.optim.lr == 3e-5
    with pytest.raises(ValueError, match=r"grpo.group_size.*'four'"):
        load_config(GRPOConfig, None, ["grpo.group_size=four"])


def test_config_by_preset_name(tmp_path):
    # Every shipped preset loads into its config class, by name with or without ".yaml".
    assert set(preset_names()) == {"nano_cpu", "nano_sft_cpu", "qwen2_5_vl_7b_gpu"}
    assert load_config(SFTConfig, "nano_sft_cpu").steps == 30
    assert load_config(GRPOConfig, "nano_cpu.yaml", ["steps=3"]).steps == 3
    assert load_config(GRPOConfig, "qwen2_5_vl_7b_gpu").model.lora is True
    # A file of one's own wins over a preset of the same name; a path with a folder part
    # never falls back to a preset, and the error lists the presets.
    (tmp_path / "nano_cpu.yaml").write_text("steps: 7\n")
    assert load_config(GRPOConfig, tmp_path / "nano_cpu.yaml").steps == 7
    with pytest.raises(FileNotFoundError, match=r"my/nano_cpu.yaml.*presets? \(nano_cpu, "):
        load_config(GRPOConfig, "my/nano_cpu.yaml")


def test_a_by_type_run_draws_round_robin_and_resumes_where_it_stopped(tiny_policy, tmp_path):
    kinds = ["flag", "flag", "flag", "capital", "anthem"]
    typed = [
        Sample(id=f"t{i}", question=f"What is {i} + {i}?", answer=str(2 * i), source="world",
               extra={"qtype": kind})
        for i, kind in enumerate(kinds)
    ]  # fmt: skip
    config = tiny_config(tmp_path / "typed", steps=3)
    config.draw = "by_type"
    train_grpo(config, policy=fresh(tiny_policy), samples=typed, stop_after=2)
    state = json.loads(
        (tmp_path / "typed" / "checkpoints" / "step_000002" / "trainer_state.json").read_text()
    )
    assert state["data_order"] == {"position": 4}
    train_grpo(config, policy=fresh(tiny_policy), samples=typed)  # resumes at step 3
    rollouts = read_metrics(tmp_path / "typed" / "rollouts.jsonl")
    asked = [r["question"] for r in rollouts if r["sample_index"] == 0]
    expected = TypeRoundRobin(kinds, seed=config.run.seed).take(6)
    assert asked == [typed[i].question for i in expected]
    # each rollout records its question's type (bench/decision_push.py --by-type)
    assert [r["qtype"] for r in rollouts if r["sample_index"] == 0] == [kinds[i] for i in expected]
    # three types, six draws: each type twice
    assert sorted(kinds[i] for i in expected) == sorted(["flag", "capital", "anthem"] * 2)


def test_forced_decisions_are_made_and_logged_apart(tiny_policy, tmp_path):
    config = tiny_config(tmp_path / "forced", steps=1)
    config.grpo.forced_search, config.grpo.forced_answer = 1, 1
    config.engine.max_new_tokens = 60  # the tiny tokenizer spells the tags letter by letter
    out = train_grpo(config, policy=fresh(tiny_policy), samples=SAMPLES)
    rollouts = read_metrics(out / "rollouts.jsonl")
    by_index = {i: [r for r in rollouts if r["sample_index"] == i] for i in range(3)}
    assert [len(rows) for rows in by_index.values()] == [2, 2, 2]
    for rollout in by_index[0]:
        first = rollout["turns"][0]
        assert first["action"] == "image_search"
        assert first["text"].endswith("</reason><search><img></search>")
    for rollout in by_index[1]:  # (the tiny random model's answer may not close its tag)
        assert "</reason><answer>" in rollout["turns"][0]["text"]
    (metrics,) = read_metrics(out / "metrics.jsonl")
    # The step's behaviour metrics are those of the free rollouts only; the forced apart.
    mean = lambda rows: sum(r["reward"]["score"] for r in rows) / len(rows)  # noqa: E731
    assert metrics["reward_mean"] == pytest.approx(mean(by_index[2]))
    assert metrics["forced_search_reward"] == pytest.approx(mean(by_index[0]))
    assert metrics["forced_answer_reward"] == pytest.approx(mean(by_index[1]))


def test_decisions_forced_in_the_reasoning_leave_the_action_to_the_model(tiny_policy, tmp_path):
    from mmsr.rollout.forcing import ANSWER_WORDS, SEARCH_WORDS

    config = tiny_config(tmp_path / "words", steps=1)
    config.grpo.forced_search, config.grpo.forced_answer = 1, 1
    config.grpo.forced_at = "reasoning"
    config.engine.max_new_tokens = 120  # the tiny tokenizer spells words letter by letter
    out = train_grpo(config, policy=fresh(tiny_policy), samples=SAMPLES)
    rollouts = read_metrics(out / "rollouts.jsonl")
    for index, words in ((0, SEARCH_WORDS), (1, ANSWER_WORDS)):
        firsts = [r["turns"][0]["text"] for r in rollouts if r["sample_index"] == index]
        assert any(words in first for first in firsts)
        for first in firsts:
            # The words follow the first full stop, unless a tag came before it.
            before = first.split(words)[0] if words in first else first
            assert words in first or "<" in before.removeprefix("<reason>")
            assert before.startswith("<reason>")
    (metrics,) = read_metrics(out / "metrics.jsonl")
    searched = [r for r in rollouts if r["sample_index"] == 0]
    made = [r["reward"]["n_image_search"] + r["reward"]["n_text_search"] > 0 for r in searched]
    assert metrics["forced_search_searched"] == pytest.approx(sum(made) / len(made))
    assert 0.0 <= metrics["forced_answer_searched"] <= 1.0
    with pytest.raises(ValueError, match="grpo.forced_at 'end' is not"):
        GRPOOptions(forced_at="end")


def test_forced_decisions_need_a_free_rollout_and_an_image_search():
    with pytest.raises(ValueError, match="forced_search 2 \\+ grpo.forced_answer 1 must lie"):
        GRPOOptions(group_size=3, forced_search=2, forced_answer=1)
    with pytest.raises(ValueError, match="max_image_search is 0"):
        GRPOConfig(grpo=GRPOOptions(forced_search=1), engine=EngineConfig(max_image_search=0))
