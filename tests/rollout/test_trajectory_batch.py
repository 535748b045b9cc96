"""collate + token_logprobs on hand-built trajectories of the tiny policy."""

from __future__ import annotations

import torch
from PIL import Image

from mmsr.rollout.batch import collate
from mmsr.rollout.logprobs import token_logprobs
from mmsr.rollout.trajectory import Trajectory, mrope_positions


def _trajectory(policy, text: str, colours: list[str]) -> Trajectory:
    images = [Image.new("RGB", (56, 56), colour) for colour in colours]
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": text}]
    prompt = policy.processor.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
    inputs = policy.processor(text=[prompt + "ok<|im_end|>"], images=images, return_tensors="pt")
    ids = inputs["input_ids"][0]
    grid = inputs["image_grid_thw"]
    mask = torch.zeros_like(ids)
    mask[-3:] = 1
    return Trajectory.bare(
        "s",
        0,
        ids,
        mask,
        position_ids=mrope_positions(policy.model, ids, grid),
        pixel_values=inputs["pixel_values"],
        image_grid_thw=grid,
    )


def test_collate_pads_right_and_keeps_images_in_row_order(tiny_policy):
    long = _trajectory(tiny_policy, "a longer question here", ["red", "blue"])
    short = _trajectory(tiny_policy, "q", ["green"])
    batch = collate([long, short], pad_id=0)
    assert batch.input_ids.shape == (2, long.length)
    assert batch.position_ids.shape == (3, 2, long.length)
    assert batch.attention_mask[1].sum() == short.length
    assert batch.loss_mask[1, short.length :].sum() == 0
    assert batch.image_grid_thw.shape == (3, 3)
    assert torch.equal(batch.pixel_values[: len(long.pixel_values)], long.pixel_values)


def test_positions_are_three_rows_and_match_the_models_own_forward(tiny_policy):
    traj = _trajectory(tiny_policy, "two images", ["red", "blue"])
    # Image tokens get distinct height/width rows: the positions are really 3-D.
    assert not torch.equal(traj.position_ids[0], traj.position_ids[1])
    batch = collate([traj], pad_id=0)
    with torch.no_grad():
        ours, _ = token_logprobs(tiny_policy.model, batch)
        reference = tiny_policy.model(
            input_ids=batch.input_ids,
            pixel_values=batch.pixel_values,
            image_grid_thw=batch.image_grid_thw,
            mm_token_type_ids=(batch.input_ids == tiny_policy.model.config.image_token_id).int(),
        ).logits
    expected = torch.log_softmax(reference[0, :-1].float(), -1).gather(
        -1, batch.input_ids[0, 1:, None]
    )[:, 0]
    assert torch.allclose(ours[0, 1:], expected, atol=1e-5)


def test_token_logprobs_padding_does_not_change_a_row_and_entropy_is_positive(tiny_policy):
    long = _trajectory(tiny_policy, "a longer question here", ["red", "blue"])
    short = _trajectory(tiny_policy, "q", ["green"])
    with torch.no_grad():
        alone, _ = token_logprobs(tiny_policy.model, collate([short], 0), temperature=0.7)
        both, entropy = token_logprobs(
            tiny_policy.model, collate([long, short], 0), temperature=0.7, with_entropy=True
        )
    assert torch.allclose(both[1, : short.length], alone[0], atol=1e-5)
    assert both[1, short.length :].abs().sum() == 0
    assert (entropy[0, 1:] > 0).all()


def test_token_logprobs_where_runs_the_head_on_the_wanted_tokens_only(tiny_policy):
    batch = collate(
        [
            _trajectory(tiny_policy, "a longer question here", ["red", "blue"]),
            _trajectory(tiny_policy, "q", ["green"]),
        ],
        0,
    )
    wanted = batch.loss_mask.bool()
    assert wanted.any() and (~wanted & batch.attention_mask.bool()).any()
    with torch.no_grad():
        full, full_entropy = token_logprobs(tiny_policy.model, batch, with_entropy=True)
        part, part_entropy = token_logprobs(
            tiny_policy.model, batch, with_entropy=True, where=batch.loss_mask
        )
    assert torch.allclose(part[wanted], full[wanted], atol=1e-5)
    assert torch.allclose(part_entropy[wanted], full_entropy[wanted], atol=1e-5)
    assert part[~wanted].abs().sum() == 0 and part_entropy[~wanted].abs().sum() == 0
