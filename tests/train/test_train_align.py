"""`mmsr train align`: only the eye trains, it learns, it resumes, the CLI runs end to end."""

from __future__ import annotations

import copy

import pytest
import torch
from typer.testing import CliRunner

from mmsr.models.policy import Policy
from mmsr.models.vision_weights import NANO_VISION_ASSET, load_vision_weights, vision_tower
from mmsr.train.align import (
    STAGES,
    AlignConfig,
    classifier_head,
    classify_loss,
    embed_loss,
    freeze_all_but_vision,
    lm_batch,
    match_embedding_scale,
    merged_tokens,
    name_candidates,
    train_align,
)
from mmsr.train.flag_batches import FlagPhotos, flag_entities, photo_seed
from mmsr.world.load import load_world

TINY_IMAGE = 56  # px: the tiny policy's processor makes 4 LM tokens of it


def tiny_config(**overrides) -> AlignConfig:
    base = dict(
        classify_steps=2,
        classify_batch=4,
        embed_steps=2,
        lm_steps=2,
        embed_batch=4,
        lm_batch=2,
        fresh_per_step=4,
        pool_size=4,
        image_size=TINY_IMAGE,
        checkpoint_every=100,
        log_every=1,
    )
    return AlignConfig(**{**base, **overrides})


def fresh_copy(policy) -> Policy:
    return Policy(model=copy.deepcopy(policy.model), processor=policy.processor, name="tiny")


def tiny_photos(policy, entities, seed: int) -> list:
    """One fresh tiny photo per entity in `entities` (repeats allowed)."""
    photos = FlagPhotos(load_world(), policy.processor, image_size=TINY_IMAGE)
    return [photos.photo(e, photo_seed(seed, 0, i)) for i, e in enumerate(entities)]


def vision_and_rest(model) -> tuple[dict, dict]:
    visual = {f"model.visual.{k}" for k in vision_tower(model).state_dict()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return (
        {k: v for k, v in state.items() if k in visual},
        {k: v for k, v in state.items() if k not in visual},
    )


def test_align_updates_only_the_vision_tower(tiny_policy, tmp_path):
    policy = fresh_copy(tiny_policy)
    vision_before, rest_before = vision_and_rest(policy.model)
    result = train_align(policy, load_world(), tiny_config(), tmp_path, console=None)
    vision_after, rest_after = vision_and_rest(policy.model)
    assert result.steps == 6 and set(result.last_loss) == set(STAGES)
    assert all(torch.equal(rest_before[k], rest_after[k]) for k in rest_before)
    changed = [k for k in vision_before if not torch.equal(vision_before[k], vision_after[k])]
    assert "model.visual.merger.mlp.2.weight" in changed
    assert not any(p.requires_grad for p in policy.model.parameters())  # left frozen


def test_lm_batch_sees_the_positions_generation_uses(tiny_policy):
    """The LM stage must train under the 3-D M-RoPE positions that generation and the rollout
    engine use: the prompt's logits from `lm_batch` equal those of the processor's own
    inputs. (Without the image-token marks the model falls back to 1-D positions; the first
    shipped eye was trained so and derailed on a third of photos when generating.)"""
    from mmsr.models.generate import user_message
    from mmsr.train.align import QUESTION

    model, processor = tiny_policy.model, tiny_policy.processor
    entity = flag_entities(load_world(), familiar=True)[0]
    photos = FlagPhotos(load_world(), processor, image_size=TINY_IMAGE)
    image = photos.image(entity, photo_seed(0, 0, 0))
    photo = photos.photo(entity, photo_seed(0, 0, 0))
    text = processor.apply_chat_template(
        [user_message(QUESTION, n_images=1)], tokenize=False, add_generation_prompt=True
    )
    reference = processor(text=[text], images=[image], return_tensors="pt")
    batch = lm_batch(processor, [photo])
    n = reference["input_ids"].shape[1]
    assert torch.equal(batch["input_ids"][:, :n], reference["input_ids"])
    with torch.no_grad():
        expected = model(**reference).logits
        got = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[:, :n]
        flat = {k: v for k, v in batch.items() if k not in ("labels", "mm_token_type_ids")}
        one_d = model(**flat).logits[:, :n]
    assert torch.allclose(got, expected, atol=1e-4)
    assert not torch.allclose(one_d, expected, atol=1e-4)  # the test can tell them apart


def losses_of(loss_fn, optimizer, steps: int = 30) -> list[float]:
    """Run `steps` optimizer steps on `loss_fn()`; the loss before each step."""
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def test_embed_loss_decreases_on_a_tiny_problem(tiny_policy):
    policy = fresh_copy(tiny_policy)
    batch = tiny_photos(policy, flag_entities(load_world(), familiar=True)[:3] * 2, seed=7)
    optimizer = torch.optim.AdamW(freeze_all_but_vision(policy.model), lr=3e-3)
    losses = losses_of(lambda: embed_loss(policy.model, policy.tokenizer, batch), optimizer)
    assert losses[-1] < 0.7 * losses[0], losses


def test_classify_loss_decreases_on_a_tiny_problem(tiny_policy):
    policy = fresh_copy(tiny_policy)
    entities = flag_entities(load_world(), familiar=True)[:3]
    labels = {e.id: i for i, e in enumerate(entities)}
    batch = tiny_photos(policy, entities * 2, seed=7)
    head = classifier_head(policy.model, len(entities))
    optimizer = torch.optim.AdamW(freeze_all_but_vision(policy.model) + list(head.parameters()))
    losses = losses_of(lambda: classify_loss(policy.model, head, batch, labels), optimizer)
    assert losses[0] > 0.8 and losses[-1] < 0.3 * losses[0], losses


def test_embedding_scale_is_matched(tiny_policy):
    policy = fresh_copy(tiny_policy)
    batch = tiny_photos(policy, flag_entities(load_world(), True)[:4], seed=3)
    with torch.no_grad():
        vision_tower(policy.model).merger.mlp[-1].weight.mul_(30.0)  # as after classify
        factor = match_embedding_scale(policy.model, batch)
        out = merged_tokens(policy.model, batch)
    table = policy.model.get_input_embeddings().weight
    assert factor < 0.2
    assert float(out.pow(2).mean() / table.pow(2).mean()) == pytest.approx(1.0, rel=0.05)


def test_contrastive_term_sees_the_names(tiny_policy):
    policy = fresh_copy(tiny_policy)
    entities = flag_entities(load_world(), True)[:3]
    batch = tiny_photos(policy, entities, seed=4)
    ids = name_candidates(policy.tokenizer, [e.name for e in entities])
    with torch.no_grad():
        plain = embed_loss(policy.model, policy.tokenizer, batch)
        both = embed_loss(policy.model, policy.tokenizer, batch, ids)
    assert float(both - plain) > 0.5  # a random tower's pick among the names: ~log(len(ids))


def test_stages_follow_each_other():
    config = AlignConfig(classify_steps=3, embed_steps=2, lm_steps=4)
    assert [config.stage_at(k)[0] for k in range(9)] == ["classify"] * 3 + ["embed"] * 2 + [
        "lm"
    ] * 4
    assert config.stage_at(5) == ("lm", 0, 4) and config.total_steps == 9
    # One warm-up step per stage here: each stage starts at its own peak lr.
    assert [config.lr_at(k) for k in (0, 3, 5)] == [
        config.classify_lr,
        config.embed_lr,
        config.lm_lr,
    ]


def test_resume_continues_exactly(tiny_policy, tmp_path):
    # pool_size == fresh_per_step == batch: every step's photos are all new, so an
    # interrupted run (which refills its pool) sees the very same photos as a straight one.
    config = tiny_config(classify_steps=2, embed_steps=2, lm_steps=2)
    straight = fresh_copy(tiny_policy)
    train_align(straight, load_world(), config, tmp_path / "straight", console=None)

    interrupted = fresh_copy(tiny_policy)
    train_align(interrupted, load_world(), config, tmp_path / "cut", console=None, stop_after=4)
    resumed = fresh_copy(tiny_policy)  # a new process: the random tower again
    result = train_align(resumed, load_world(), config, tmp_path / "cut", resume=True, console=None)
    assert result.steps == 6
    a = vision_tower(straight.model).state_dict()
    b = vision_tower(resumed.model).state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_resume_without_checkpoint_names_the_path(tiny_policy, tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        train_align(fresh_copy(tiny_policy), load_world(), tiny_config(), tmp_path, resume=True)


def test_cli_align_two_steps_end_to_end(tiny_qwen_vl_dir, tiny_policy, tmp_path):
    from mmsr.cli import app

    out = tmp_path / "eye.safetensors"
    args = ["train", "align", "--model", str(tiny_qwen_vl_dir), "--steps", "1"]
    args += ["--out", str(out), "--run-dir", str(tmp_path / "run"), "--image-size", "56"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "align took" in result.output
    model = copy.deepcopy(tiny_policy.model)
    load_vision_weights(model, out)  # the file fits the model it was trained for
    assert (tmp_path / "run" / "align_checkpoint.pt").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not NANO_VISION_ASSET.is_file(), reason="no shipped nano eye yet")
def test_shipped_eye_knows_familiar_flags_only(nano_policy):
    """The shipped file is a trained eye with a knowledge boundary, not a random tower.

    Guards the asset, not the issue's 90% target: the shipped eye names 88.3% of familiar
    flags and 0% of unfamiliar ones on 240 + 226 fresh photos (RESULTS.md "Nano eye"); a
    random tower names under 3%. 16 photos each keeps this test short, hence the margin.
    """
    from mmsr.train.eye_eval import score_eye

    world = load_world()
    familiar = score_eye(nano_policy, world, familiar=True, seed=123, max_entities=16)
    unfamiliar = score_eye(nano_policy, world, familiar=False, seed=123, max_entities=16)
    assert familiar.accuracy >= 0.4, familiar.examples
    assert unfamiliar.accuracy <= 0.1, unfamiliar.examples


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--start-from", "no/such/eye.safetensors"], "no vision weights at no/such"),
        (["--model", "some/checkpoint", "--start-from", "shipped"], "--model nano only"),
    ],
)
def test_cli_align_start_from_is_checked(tmp_path, extra, message):
    from mmsr.cli import app

    args = ["train", "align", "--steps", "1", "--run-dir", str(tmp_path), *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0 and message in result.output
