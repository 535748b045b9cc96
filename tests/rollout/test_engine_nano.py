"""The engine on the real nano policy (slow): generation log-probs equal a training forward
over a two-turn trajectory with the question image and search thumbnails."""

from __future__ import annotations

import pytest
import torch

from mmsr.rollout.batch import collate
from mmsr.rollout.engine import EngineConfig, RolloutEngine
from mmsr.rollout.logprobs import token_logprobs
from mmsr.world.load import load_world

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Palette images")]


def test_nano_two_turn_logprobs_match_training_forward(nano_policy, fakes):
    tokenizer = nano_policy.tokenizer
    forced = tokenizer.encode("<reason>?</reason><search><img></search>", add_special_tokens=False)
    forced.append(tokenizer.convert_tokens_to_ids("<|im_end|>"))

    def forcer(group, index, turn, step):
        return forced[step] if turn == 1 and step < len(forced) else None

    config = EngineConfig(max_turns=2, max_new_tokens=24, k=2, max_result_chars=120)
    engine = RolloutEngine(nano_policy, fakes.make_test_tools(), config, forcer=forcer)
    trajectories = engine.rollout(load_world().questions[:1], n=2, seed=0)
    traj = trajectories[0]
    assert len(traj.turns) == 2 and traj.turns[0].action == "image_search"
    assert traj.image_grid_thw.shape[0] == 3  # question image + 2 thumbnails
    batch = collate(trajectories, pad_id=tokenizer.pad_token_id)
    with torch.no_grad():
        logp, _ = token_logprobs(nano_policy.model, batch)
    mask = batch.loss_mask.bool()
    assert int(mask.sum()) == sum(t.n_sampled_tokens for t in trajectories)
    assert (logp[mask] - batch.old_logp[mask]).abs().max() <= 1e-3
