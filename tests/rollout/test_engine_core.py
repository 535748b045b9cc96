"""The rollout engine on the tiny random Qwen2.5-VL with in-test search backends.

The tiny model writes random bytes, so tests that need a search steer its first turn with
a token forcer: the forced tokens go through the model like sampled ones and are recorded
with the model's true log-probs; every later turn is really sampled.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from mmsr.reward import compute_score
from mmsr.rollout.batch import collate
from mmsr.rollout.engine import (
    FREE_NO_STOP,
    EngineConfig,
    RolloutEngine,
    _prefill_groups,
    _shared_prompts,
)
from mmsr.rollout.logprobs import token_logprobs
from mmsr.train.lora import language_layers
from mmsr.world.load import load_world

pytestmark = pytest.mark.filterwarnings("ignore:Palette images")

IMAGE_SEARCH_TURN = "<reason>?</reason><search><img></search>"


def _samples(n: int = 1):
    return load_world().questions[:n]


def _forcer(policy, text: str = IMAGE_SEARCH_TURN, on_turns=(1,), rows=None):
    tokens = policy.tokenizer.encode(text, add_special_tokens=False)
    tokens.append(policy.tokenizer.convert_tokens_to_ids("<|im_end|>"))

    def forcer(group, index, turn, step):
        if turn in on_turns and (rows is None or (group, index) in rows) and step < len(tokens):
            return tokens[step]
        return None

    return forcer


def _config(**overrides) -> EngineConfig:
    values = {"max_new_tokens": 48, "max_total_tokens": 4000, "batch_size": 8}
    values.update(overrides)
    return EngineConfig(**values)


@pytest.fixture(scope="module")
def searched(tiny_policy, fakes):
    """Two trajectories of one sample; the first is forced to image-search in turn 1."""
    engine = RolloutEngine(
        tiny_policy, fakes.make_test_tools(), _config(), forcer=_forcer(tiny_policy, rows={(0, 0)})
    )
    return engine.rollout(_samples(1), n=2, seed=3)


def test_generation_logprobs_equal_a_training_forward_multi_turn_multi_image(tiny_policy, searched):
    traj = searched[0]
    assert [turn.action for turn in traj.turns][0] == "image_search"
    assert len(traj.turns) >= 2 and traj.n_image_search == 1
    assert traj.image_grid_thw.shape[0] == 4  # the question image and 3 thumbnails
    sampled_later = sum(turn.n_tokens for turn in traj.turns[1:])
    assert sampled_later > 0  # later turns were really sampled
    batch = collate(searched, pad_id=tiny_policy.tokenizer.pad_token_id)
    model = tiny_policy.model
    model.train()
    try:
        logp, _ = token_logprobs(model, batch)
    finally:
        model.eval()
    assert logp.requires_grad
    mask = batch.loss_mask.bool()
    assert int(mask.sum()) == sum(turn.n_tokens for t in searched for turn in t.turns)
    assert (logp[mask].detach() - batch.old_logp[mask]).abs().max() <= 1e-3
    assert batch.old_logp[~mask].abs().sum() == 0


def test_trajectory_record_is_consistent(tiny_policy, searched):
    traj = searched[0]
    tokenizer = tiny_policy.tokenizer
    assert traj.group == 0 and [t.sample_index for t in searched] == [0, 1]
    assert traj.input_ids.shape == traj.loss_mask.shape == traj.old_logp.shape
    assert traj.position_ids.shape == (3, traj.length)
    assert traj.loss_mask[: traj.prompt_length].sum() == 0
    call = traj.tool_calls[0]
    assert call.kind == "image_search" and call.turn == 1 and len(call.response["results"]) == 3
    assert "<information>" in traj.turns[0].observation
    assert traj.turns[0].observation.count("<image>") == 3  # thumbnails went back as images
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    # Every turn closed by a sampled <|im_end|> has it under the loss mask.
    ends = (traj.input_ids == im_end) & (traj.loss_mask == 1)
    closed_turns = [t for t in traj.turns if t.n_tokens and "<|im_end|>" not in t.text]
    assert int(ends.sum()) <= len(closed_turns)
    assert int(ends.sum()) >= 1  # the forced first turn ended with a sampled <|im_end|>
    json.dumps(traj.to_json())
    score = compute_score(traj.sample_id, traj.solution_str, "Andorra")
    assert score["n_image_search"] == 1


def test_same_seed_same_trajectories_and_batch_composition_does_not_matter(
    tiny_policy, fakes, searched
):
    forcer = _forcer(tiny_policy, rows={(0, 0)})
    engine = RolloutEngine(
        tiny_policy, fakes.make_test_tools(), _config(batch_size=1), forcer=forcer
    )
    again = engine.rollout(_samples(1), n=2, seed=3)
    for first, second in zip(searched, again, strict=True):
        assert torch.equal(first.input_ids, second.input_ids)
        assert torch.allclose(first.old_logp, second.old_logp, atol=1e-5)
    other = RolloutEngine(tiny_policy, fakes.make_test_tools(), _config(max_new_tokens=8)).rollout(
        _samples(1), n=1, seed=4
    )
    same_seed = RolloutEngine(
        tiny_policy, fakes.make_test_tools(), _config(max_new_tokens=8)
    ).rollout(_samples(1), n=1, seed=3)
    assert not torch.equal(other[0].input_ids, same_seed[0].input_ids)


def test_slow_tools_overlap_gives_the_same_trajectories(tiny_policy, fakes):
    forcer = _forcer(tiny_policy)
    base = _config(max_turns=2)
    tools = fakes.make_test_tools()
    fast = RolloutEngine(tiny_policy, tools, base, forcer=forcer).rollout(_samples(2), n=1)
    slow = RolloutEngine(
        tiny_policy,
        fakes.SlowTools(tools, 0.05),
        _config(max_turns=2, batch_size=1),
        forcer=forcer,
    ).rollout(_samples(2), n=1)
    for a, b in zip(fast, slow, strict=True):
        assert torch.equal(a.input_ids, b.input_ids)
        assert b.tool_calls[0].latency_ms >= 50


def test_tool_failure_becomes_an_observation(tiny_policy, fakes):
    engine = RolloutEngine(
        tiny_policy,
        fakes.make_test_tools(fail=True),
        _config(max_turns=2),
        forcer=_forcer(tiny_policy),
    )
    traj = engine.rollout(_samples(1))[0]
    assert traj.tool_calls[0].response["error"]
    assert "The search failed" in traj.turns[0].observation
    assert len(traj.turns) == 2


def test_missing_tool_becomes_an_observation(tiny_policy):
    engine = RolloutEngine(tiny_policy, None, _config(max_turns=2), forcer=_forcer(tiny_policy))
    traj = engine.rollout(_samples(1))[0]
    assert "not configured" in traj.turns[0].observation


def test_length_budget_ends_cleanly(tiny_policy, fakes):
    prompt_length = (
        RolloutEngine(tiny_policy, None, _config(max_new_tokens=1, max_turns=1))
        .rollout(_samples(1))[0]
        .prompt_length
    )
    engine = RolloutEngine(
        tiny_policy, fakes.make_test_tools(), _config(max_total_tokens=prompt_length + 30)
    )
    traj = engine.rollout(_samples(1))[0]
    assert traj.finish_reason == "length"
    assert traj.length <= prompt_length + 30


def test_rows_joining_and_leaving_free_slots_keep_exact_logprobs(tiny_policy, fakes):
    """More trajectories than slots, searches on some rows and slow tools: rows leave,
    their slots are reused, the window widens and is trimmed, the batch is compacted;
    every token's log-prob still equals a training forward's, and the trajectories equal
    those decoded one at a time."""
    searching = {(0, 0), (1, 1), (2, 0), (2, 1)}
    forcer = _forcer(tiny_policy, rows=searching)
    tools = fakes.SlowTools(fakes.make_test_tools(), 0.02)
    engine = RolloutEngine(tiny_policy, tools, _config(batch_size=4), forcer=forcer)
    trajectories = engine.rollout(_samples(3), n=2, seed=5)
    assert engine.stats["rows_placed"] > 0 and engine.stats["compactions"] > 0
    assert sum(t.n_image_search for t in trajectories) == len(searching)
    batch = collate(trajectories, pad_id=tiny_policy.tokenizer.pad_token_id)
    with torch.inference_mode():
        logp, _ = token_logprobs(tiny_policy.model, batch)
    mask = batch.loss_mask.bool()
    assert (logp[mask] - batch.old_logp[mask]).abs().max() <= 1e-3
    alone = RolloutEngine(tiny_policy, tools, _config(batch_size=1), forcer=forcer)
    for together, single in zip(trajectories, alone.rollout(_samples(3), n=2, seed=5), strict=True):
        assert torch.equal(together.input_ids, single.input_ids)
        assert torch.allclose(together.old_logp, single.old_logp, atol=1e-5)


def test_recorded_trunk_equals_a_training_forwards_layer_output(tiny_policy, fakes):
    """Rows that join, leave, search and share their group's prompt: each trajectory's
    recorded output of layer 1 is a full forward's at every position the model saw, and
    only the last token (sampled, never fed back) is missing."""
    from mmsr.train.shared_trunk import SharedTrunk

    forcer = _forcer(tiny_policy, rows={(0, 0), (1, 1), (2, 0)})
    tools = fakes.SlowTools(fakes.make_test_tools(), 0.02)
    engine = RolloutEngine(tiny_policy, tools, _config(batch_size=4), forcer=forcer, record_trunk=1)
    trajectories = engine.rollout(_samples(3), n=2, seed=5)
    assert engine.stats["rows_placed"] > 0 and engine.stats["prefill_shared_tokens"] > 0
    assert sum(t.n_image_search for t in trajectories) == 3
    trunk = SharedTrunk(tiny_policy.model, tiny_policy.model, 1)
    for traj in trajectories:
        assert traj.trunk is not None and traj.trunk.shape[0] == traj.length - 1
        with torch.inference_mode(), trunk.capture():
            token_logprobs(tiny_policy.model, collate([traj], pad_id=0))
        torch.testing.assert_close(traj.trunk, trunk.recorded[0, :-1], atol=1e-4, rtol=1e-4)
    plain = RolloutEngine(tiny_policy, tools, _config(batch_size=4), forcer=forcer)
    assert all(t.trunk is None for t in plain.rollout(_samples(1), n=1, seed=5))


def _draws(engine, logits: torch.Tensor, n: int = 2000) -> torch.Tensor:
    """`n` tokens drawn by the engine's sampler from `logits` [V], 50 rows a call."""
    generator = torch.Generator().manual_seed(0)
    row = SimpleNamespace(group=0, sample_index=0, turn=1, turn_tokens=[], generator=generator)
    drawn = []
    for _ in range(n // 50):
        drawn += [token for token, _ in engine._sample([row] * 50, logits.expand(50, -1))]
    return torch.tensor(drawn)


def test_sampler_draws_from_the_tempered_top_p_distribution(tiny_policy, fakes):
    def engine(**overrides):
        return RolloutEngine(tiny_policy, fakes.make_test_tools(), _config(**overrides))

    plain = engine()
    stop = next(iter(plain.stops))
    logits = torch.full((tiny_policy.model.get_input_embeddings().num_embeddings,), -1e4)
    logits[[10, 11, stop]] = torch.log(torch.tensor([0.6, 0.3, 0.1]))
    logits[12] = 3.0
    plain.banned = [*plain.banned, 12]  # banned: never drawn, however much mass it has
    drawn = _draws(plain, logits)
    shares = torch.tensor([(drawn == token).float().mean() for token in (10, 11, stop)])
    assert torch.allclose(shares, torch.tensor([0.6, 0.3, 0.1]), atol=0.04), shares
    row = SimpleNamespace(
        group=0, sample_index=0, turn=1, turn_tokens=[], generator=torch.Generator()
    )
    (token, logp), *_ = plain._sample([row], logits[None])
    # The recorded log-prob is the untruncated one (banned mass included).
    assert logp == pytest.approx(float(torch.log_softmax(logits, -1)[token]), abs=1e-6)
    hot = engine(temperature=3.0)
    hot.banned = plain.banned
    hot_shares = (_draws(hot, logits) == stop).float().mean()
    assert hot_shares > 0.2  # flatter at a higher temperature (0.1 -> ~0.22)
    for top_p, kept in ((0.5, {10}), (0.8, {10, 11})):
        nucleus = engine(top_p=top_p)
        nucleus.banned = plain.banned  # the nucleus of what can be drawn
        assert set(_draws(nucleus, logits, 500).tolist()) == kept
    no_stop = RolloutEngine(
        tiny_policy, fakes.make_test_tools(), _config(), forcer=lambda *_: FREE_NO_STOP
    )
    assert stop not in _draws(no_stop, logits, 500).tolist()


def test_prefill_groups_rows_of_similar_lengths():
    rows = [
        SimpleNamespace(ids=[0] * (width + 5), n_cached=5) for width in (700, 20, 310, 720, 300)
    ]
    groups = _prefill_groups(rows)
    assert [[len(row.ids) - row.n_cached for row in group] for group in groups] == [
        [20],
        [300, 310],
        [700, 720],
    ]
    assert _prefill_groups(rows, waste=100.0) == [sorted(rows, key=lambda row: len(row.ids))]


def test_a_groups_shared_prompt_is_prefilled_once(tiny_policy, fakes):
    forcer = _forcer(tiny_policy)
    shared = RolloutEngine(tiny_policy, fakes.make_test_tools(), _config(), forcer=forcer)
    together = shared.rollout(_samples(2), n=3, seed=5)
    prompts = [together[0].prompt_length, together[3].prompt_length]
    # Two copies of each sample's prompt were not computed; every prompt was once.
    assert shared.stats["prefill_shared_tokens"] == 2 * sum(prompts)
    alone = RolloutEngine(
        tiny_policy, fakes.make_test_tools(), _config(batch_size=1), forcer=forcer
    ).rollout(_samples(2), n=3, seed=5)
    for first, second in zip(together, alone, strict=True):
        assert torch.equal(first.input_ids, second.input_ids)
        assert torch.allclose(first.old_logp, second.old_logp, atol=1e-5)


def test_only_identical_fresh_prompts_are_shared():
    def row(ids, pixels, n_cached=0):
        return SimpleNamespace(ids=ids, pixel_chunks=[torch.tensor(pixels)], n_cached=n_cached)

    rows = [
        row([1, 2], [0.5]),
        row([1, 2], [0.5]),  # a copy of row 0
        row([1, 2], [0.25]),  # same text, another image
        row([1, 3], [0.5]),  # another text
        row([1, 2], [0.5], n_cached=2),  # has a past of its own
        row([1, 2], [0.25]),  # a copy of row 2
    ]
    firsts, source = _shared_prompts(rows)
    assert firsts == [rows[0], rows[2], rows[3], rows[4]]
    assert source == [0, 0, 1, 2, 3, 1]


def test_bf16_sampling_runs_a_bf16_copy_and_keeps_fp32_logprobs(tiny_policy, fakes):
    """A bf16 sampler: the policy stays fp32, trajectories are complete, their old_logp are
    fp32 log-probs close to the fp32 policy's own, the recorded trunk is fp32, and
    `refresh` brings the copy up to date after the policy's weights change."""
    forcer = _forcer(tiny_policy, rows={(0, 0)})
    engine = RolloutEngine(tiny_policy, fakes.make_test_tools(), _config(sample_dtype="bf16"),
                           forcer=forcer, record_trunk=1)  # fmt: skip
    assert engine.sampler is not tiny_policy.model
    assert next(engine.sampler.parameters()).dtype == torch.bfloat16
    assert tiny_policy.dtype == torch.float32
    trajectories = engine.rollout(_samples(2), n=2, seed=3)
    assert trajectories[0].n_image_search == 1 and all(t.turns for t in trajectories)
    batch = collate(trajectories, pad_id=tiny_policy.tokenizer.pad_token_id)
    with torch.inference_mode():
        exact, _ = token_logprobs(tiny_policy.model, batch)
    mask = batch.loss_mask.bool()
    assert batch.old_logp.dtype == torch.float32
    gap = (exact[mask] - batch.old_logp[mask]).abs()
    assert 0 < float(gap.max()) < 0.5 and float(gap.mean()) < 0.05  # bf16 rounding only
    assert all(t.trunk.dtype == torch.float32 for t in trajectories)

    head = tiny_policy.model.lm_head.weight
    layer = language_layers(tiny_policy.model)[0].mlp.down_proj.weight
    saved = layer.detach().clone()
    try:
        with torch.no_grad():
            layer.mul_(2.0)
        copy = language_layers(engine.sampler)[0].mlp.down_proj.weight
        assert not torch.equal(copy, layer.to(torch.bfloat16))
        engine.refresh()
        torch.testing.assert_close(copy, layer.to(torch.bfloat16))
        assert engine.sampler.lm_head.weight.dtype == torch.bfloat16 and head.dtype == torch.float32
    finally:
        with torch.no_grad():
            layer.copy_(saved)
        engine.refresh()
