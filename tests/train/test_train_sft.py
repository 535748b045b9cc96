"""SFT: world scripts independent of the model, exact replayed masks, loss goes down,
distillation files."""

from __future__ import annotations

import copy
import json
import random

import pytest
import torch

from mmsr.models.policy import Policy
from mmsr.rollout.engine import EngineConfig, RolloutEngine
from mmsr.train.config import OptimOptions, RunOptions, SFTConfig
from mmsr.train.optim import build_optimizer, build_scheduler
from mmsr.train.sft import (
    PLANS,
    answer_token_weights,
    asks_for,
    choose_plan,
    is_flag_question,
    plan_fits,
    plan_turns,
    quote_evidence,
    read_distillation,
    sft_step,
    train_sft,
    world_script,
    world_sft_scripts,
)
from mmsr.world.load import load_world


@pytest.fixture(scope="module")
def world_samples():
    return load_world().questions_in("train")[:40]


def test_plans_are_random_and_follow_only_the_question_type(world_samples):
    _, _, plans = world_sft_scripts(world_samples, 200, p_direct=0.3, seed=1)
    _, _, again = world_sft_scripts(world_samples, 200, p_direct=0.3, seed=1)
    assert plans == again  # seeded
    assert {"answer", "image", "image+text", "text"} <= set(plans)
    assert 0.2 < plans.count("answer") / 200 < 0.4
    # the three search plans equally often, though few questions are flag questions
    for plan in ("image", "image+text", "text"):
        assert 0.15 < plans.count(plan) / 200 < 0.32, plans.count(plan)
    rng = random.Random(0)
    assert {choose_plan(rng, 0.3) for _ in range(50)} == set(PLANS)
    # a question gets only plans that fit it, and more than one of them: no knowledge
    samples, _, plans = world_sft_scripts(world_samples, 400, p_direct=0.3, seed=2)
    for sample, plan in zip(samples, plans, strict=True):
        assert plan_fits(plan, sample)
    capital = {p for s, p in zip(samples, plans, strict=True) if s.extra["qtype"] == "capital"}
    assert capital == {"answer", "image+text", "text"}


def test_plan_turns_use_the_protocol_tags(world_samples):
    from mmsr.rollout.protocol import parse_action

    sample = next(s for s in world_samples if s.extra.get("qtype") == "capital")
    turns = plan_turns("image+text", sample, "Andorra")
    actions = [parse_action(t).kind for t in turns]
    assert actions == ["image_search", "text_search", "answer"]
    assert parse_action(turns[-1]).answer == sample.answer


def test_grpo_forces_its_decisions_where_the_scripts_decide(world_samples):
    from mmsr.rollout.forcing import ANSWER_WORDS, SEARCH_WORDS

    # GRPO's `forced_at="reasoning"` writes its words after the reasoning's first full stop:
    # the scripts' first sentence says what the question asks for, the second decides.
    assert {s.extra.get("qtype") for s in world_samples} >= {"flag", "capital"}
    for sample in world_samples:
        start = f"<reason>{asks_for(sample)} "
        assert asks_for(sample).count(".") == 1 and asks_for(sample).endswith(".")
        assert plan_turns("image", sample, "Togo")[0].startswith(start + SEARCH_WORDS + ",")
        assert plan_turns("answer", sample, "Togo")[0].startswith(start + ANSWER_WORDS + " ")


def tiny_engine(tiny_policy):
    policy = Policy(copy.deepcopy(tiny_policy.model), tiny_policy.processor, "tiny")
    config = EngineConfig(max_turns=3, max_new_tokens=64, max_total_tokens=2000)
    return policy, RolloutEngine(policy, None, config)


def test_replayed_trajectories_mask_exactly_the_scripted_turns(tiny_policy, world_samples):
    policy, engine = tiny_engine(tiny_policy)
    samples, scripts, plans = world_sft_scripts(world_samples, 4, p_direct=0.5, seed=3)
    trajectories = engine.replay(samples, scripts)
    tokenizer = policy.tokenizer
    for traj, sample, plan in zip(trajectories, samples, plans, strict=True):
        masked = traj.input_ids[traj.loss_mask.bool()].tolist()
        text = tokenizer.decode(masked)
        expected = plan_turns(plan, sample, "X")
        assert text.count("<|im_end|>") == len(traj.turns) == len(expected)
        assert "<information>" not in text  # tool results are never trained on
        assert traj.old_logp.abs().sum() == 0


@pytest.mark.slow
def test_sft_lowers_the_loss_and_saves_a_loadable_model(tiny_policy, world_samples, tmp_path):
    policy, engine = tiny_engine(tiny_policy)
    samples, scripts, _ = world_sft_scripts(world_samples, 8, p_direct=0.3, seed=0)
    trajectories = engine.replay(samples, scripts)
    config = SFTConfig(
        steps=6, batch_size=8, micro_batch_size=4, search_config="none",
        optim=OptimOptions(lr=3e-3), run=RunOptions(out=str(tmp_path / "sft"), save_every=3),
    )  # fmt: skip
    config.model.freeze_vision = True
    out = train_sft(config, policy=policy, trajectories=trajectories)
    from mmsr.train.metrics import read_metrics

    losses = [row["loss"] for row in read_metrics(out / "metrics.jsonl")]
    assert len(losses) == 6 and losses[-1] < 0.8 * losses[0], losses
    from mmsr.models.loading import load_policy

    final = load_policy(out / "final", device="cpu")
    assert final.model.config.model_type == policy.model.config.model_type


def test_sft_micro_batches_match_one_batch(tiny_policy, world_samples):
    policy, engine = tiny_engine(tiny_policy)
    samples, scripts, _ = world_sft_scripts(world_samples, 4, p_direct=0.5, seed=5)
    trajectories = engine.replay(samples, scripts)
    grads = []
    for micro in (4, 1):
        model = copy.deepcopy(policy.model)
        config = SFTConfig(micro_batch_size=micro, optim=OptimOptions(lr=0.0))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        metrics = sft_step(model, trajectories, optimizer, scheduler, config, pad_id=0)
        grads.append(
            (metrics["loss"], [p.grad.clone() for p in model.parameters() if p.grad is not None])
        )
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_sft_steps_from_the_trunk_cache_equal_full_forwards(tiny_policy, world_samples):
    from mmsr.train.config import ModelOptions
    from mmsr.train.lora import language_layers, prepare_trainable
    from mmsr.train.shared_trunk import TrunkCache

    policy, engine = tiny_engine(tiny_policy)
    samples, scripts, _ = world_sft_scripts(world_samples, 4, p_direct=0.5, seed=5)
    trajectories = engine.replay(samples, scripts)
    runs = {}
    for cached in (False, True):
        model = prepare_trainable(copy.deepcopy(policy.model), ModelOptions(freeze_layers=1))
        config = SFTConfig(micro_batch_size=2)
        optim = OptimOptions(lr=1e-2, warmup_steps=0)
        optimizer = build_optimizer(model, optim)
        scheduler = build_scheduler(optimizer, optim, 3)
        trunk = TrunkCache(model, 1) if cached else None
        bottom_calls: list[int] = []
        hook = language_layers(model)[0].register_forward_hook(
            lambda *args, calls=bottom_calls: calls.append(1)
        )
        losses = []
        for order in ([0, 1, 2, 3], [3, 1, 0, 2], [2, 0, 1, 3]):  # new partners each step
            batch = [trajectories[i] for i in order]
            step = sft_step(model, batch, optimizer, scheduler, config, 0, None, trunk, order)
            losses.append(step["loss"])
        hook.remove()
        runs[cached] = (losses, [p.detach().clone() for p in model.parameters()], bottom_calls)
    (full, full_params, full_calls), (reused, reused_params, reused_calls) = runs[False], runs[True]
    assert len(full_calls) == 6 and len(reused_calls) == 2  # only the first step ran layer 1
    assert reused == pytest.approx(full, rel=1e-5) and full[2] < full[0]
    for a, b in zip(reused_params, full_params, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="one key per trajectory"):
        sft_step(model, trajectories, optimizer, scheduler, config, 0, None, trunk, [0])


def test_answer_weight_falls_on_the_answer_tags_content_only(tiny_policy, world_samples):
    policy, engine = tiny_engine(tiny_policy)
    samples, scripts, _ = world_sft_scripts(world_samples, 4, p_direct=0.5, seed=3)
    trajectories = engine.replay(samples, scripts)
    tokenizer = policy.tokenizer
    for traj, sample in zip(trajectories, samples, strict=True):
        mask = traj.loss_mask.float()
        assert torch.equal(answer_token_weights(traj, tokenizer, 1.0), mask)
        weights = answer_token_weights(traj, tokenizer, 4.0)
        assert torch.equal(weights > 0, mask > 0)  # nothing outside the loss mask
        stressed = tokenizer.decode(traj.input_ids[weights == 4.0].tolist())
        assert stressed.startswith(sample.answer) or stressed.startswith(f">{sample.answer}")
        assert stressed.endswith("</answer>") and "<reason>" not in stressed
        assert set(weights.unique().tolist()) == {0.0, 1.0, 4.0}


def test_sft_step_weighs_answer_tokens_and_stays_a_weighted_mean(tiny_policy, world_samples):
    policy, engine = tiny_engine(tiny_policy)
    samples, scripts, _ = world_sft_scripts(world_samples, 4, p_direct=0.5, seed=5)
    trajectories = engine.replay(samples, scripts)
    tokenizer = policy.tokenizer
    losses = {}
    for name, weight, micro in (("plain", None, 4), ("ones", 1.0, 4), ("x5", 5.0, 4),
                                ("x5 micro", 5.0, 1)):  # fmt: skip
        model = copy.deepcopy(policy.model)
        config = SFTConfig(micro_batch_size=micro, optim=OptimOptions(lr=0.0))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        rows = None
        if weight is not None:
            rows = [answer_token_weights(t, tokenizer, weight) for t in trajectories]
        losses[name] = sft_step(model, trajectories, optimizer, scheduler, config, 0, rows)["loss"]
    assert losses["ones"] == pytest.approx(losses["plain"], rel=1e-5)
    # the weighted mean of the tokens' NLL, computed here from their log-probs
    from mmsr.rollout.batch import collate
    from mmsr.rollout.logprobs import token_logprobs
    from mmsr.train.sft import pad_weights

    batch = collate(trajectories, 0)
    with torch.no_grad():
        logp, _ = token_logprobs(policy.model.eval(), batch, where=batch.loss_mask)
    weights = pad_weights([answer_token_weights(t, tokenizer, 5.0) for t in trajectories])
    expected = float(-(logp * weights).sum() / weights.sum())
    assert losses["x5"] == pytest.approx(expected, rel=1e-4)
    assert abs(expected - losses["plain"]) > 1e-4  # the weights do move it
    assert losses["x5 micro"] == pytest.approx(losses["x5"], rel=1e-5)
    with pytest.raises(ValueError, match="answer_weight"):
        SFTConfig(answer_weight=0)
    with pytest.raises(ValueError, match="keep_wrong_names .* decision is 'flag'"):
        SFTConfig(keep_wrong_names=True)
    assert SFTConfig(keep_wrong_names=True, decision="flag-fact").keep_wrong_names
    with pytest.raises(ValueError, match="keep_wrong_names_except .* needs keep_wrong_names"):
        SFTConfig(decision="flag-fact", keep_wrong_names_except=["continent"])
    with pytest.raises(ValueError, match=r"unknown question type\(s\) \['flag'\]"):
        SFTConfig(decision="flag-fact", keep_wrong_names=True, keep_wrong_names_except=["flag"])
    with pytest.raises(ValueError, match="a list of question types, not the string 'continent'"):
        SFTConfig(decision="flag-fact", keep_wrong_names=True, keep_wrong_names_except="continent")


def test_distillation_file_is_read_and_filtered(tmp_path):
    path = tmp_path / "trajectories.jsonl"
    rows = [
        {"sample_id": "a", "question": "Q?", "golds": ["x"], "correct_rule": True,
         "trajectory": {"turns": [{"text": "<reason>r</reason><answer>x</answer>"}]}},
        {"sample_id": "b", "question": "Q?", "golds": ["y"], "correct_rule": False,
         "trajectory": {"turns": [{"text": "<reason>r</reason><answer>z</answer>"}]}},
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    samples, scripts = read_distillation(path)
    assert [s.id for s in samples] == ["a"] and scripts[0](0, []).endswith("<answer>x</answer>")
    assert len(read_distillation(path, only_correct=False)[0]) == 2
    path.write_text('{"question": "Q?"}\n')
    with pytest.raises(ValueError, match=r"trajectories.jsonl:1"):
        read_distillation(path)


def test_quote_evidence_finds_the_line_that_states_the_answer():
    results = (
        "<information>1. Togo — Overview: Independence: 27 April 1960 (from French-administered"
        " UN trusteeship). Key facts: - Region: Africa - Continent: Africa - Capital: Lome"
        " - Languages: French (official, language of commerce), Ewe and Mina (in the south)"
        "</information>"
    )
    assert quote_evidence(results, ["Africa"], "continent") == "Continent: Africa"
    assert quote_evidence(results, ["Lome"], "capital") == "Capital: Lome"
    # A long piece is cut after the answer; "French-administered" is not the word French.
    assert quote_evidence(results, ["French"], "official language") == "Languages: French"
    assert quote_evidence(results, ["Paris"], "capital") is None
    assert quote_evidence(results, ["lome"], "capital", limit=5) is None
    # A fact at a line start (the world's text results) is quoted without its list dash.
    line_start = "URL: world://to/overview\n- Continent: Africa Despite those moves, " + "x" * 90
    assert quote_evidence(line_start, ["Africa"], "continent") == "Continent: Africa"


def test_the_answer_turn_after_a_text_search_quotes_its_results(world_samples):
    from mmsr.rollout.protocol import parse_action

    sample = next(s for s in world_samples if s.extra.get("qtype") == "capital")
    script = world_script("text", sample, "Andorra")
    first = script(0, [])
    assert parse_action(first).kind == "text_search"
    found = f"<information>Key facts: - Capital: {sample.answer} - Population: 1</information>"
    last = script(1, [found])
    assert f"The results say: Capital: {sample.answer}." in last
    # Each later turn first repeats what the question asks for (the topic, to copy).
    assert last.startswith("<reason>The question asks for the capital. The results say:")
    assert parse_action(last).answer == sample.answer
    assert "The results give the capital." in script(1, ["<information>nothing</information>"])


def test_scripts_name_the_topic_in_the_questions_words(world_samples):
    from mmsr.world.questions import TEMPLATES, TOPICS

    for qtype, topic in TOPICS.items():
        if qtype != "independence":  # the template says "become independent"
            assert topic in TEMPLATES[qtype].lower(), qtype
    sample = next(s for s in world_samples if s.extra.get("qtype") == "internet_code")
    first, search, _ = plan_turns("image+text", sample, "Togo")
    assert "The question asks for the internet country code." in first
    assert "<text_search>Togo internet country code</text_search>" in search
    flag = next(s for s in world_samples if s.extra.get("qtype") == "flag")
    assert "which country this flag belongs to" in plan_turns("image", flag, "Togo")[0]


def test_answering_without_search_names_the_flag_in_the_eyes_words(world_samples):
    from mmsr.train.align import answer_text

    flag = next(s for s in world_samples if s.extra.get("qtype") == "flag")
    (turn,) = plan_turns("answer", flag, "Togo")
    assert f"{answer_text('Togo')}</reason><answer>{flag.answer}</answer>" in turn
    capital = next(s for s in world_samples if s.extra.get("qtype") == "capital")
    (turn,) = plan_turns("answer", capital, "Togo")
    said = f"The capital of Togo is {capital.answer}."
    assert turn.endswith(f"{answer_text('Togo')} {said}</reason><answer>{capital.answer}</answer>")
    continent = next(s for s in world_samples if s.extra.get("qtype") == "continent")
    (turn,) = plan_turns("answer", continent, "Togo")
    assert f"Togo is on the continent of {continent.answer}.</reason>" in turn
    first, _ = plan_turns("text", capital, "Togo")
    assert f"{answer_text('Togo')} I do not know its capital.</reason>" in first


def test_the_fact_decision_words_attribute_questions_apart_from_flag_questions(world_samples):
    from mmsr.rollout.forcing import SEARCH_WORDS
    from mmsr.train.align import answer_text

    capital = next(s for s in world_samples if s.extra.get("qtype") == "capital")
    (turn,) = plan_turns("answer", capital, "Togo", decision="fact")
    start = "<reason>The question asks for the capital. Its capital I know. "
    assert turn.startswith(start + answer_text("Togo") + " The capital of Togo is ")
    first, _, _ = plan_turns("image+text", capital, "Togo", decision="fact")
    look = "Its capital I look up: first the flag, with the image.</reason><search><img>"
    assert first == f"<reason>The question asks for the capital. {look}</search>"
    assert SEARCH_WORDS not in first and SEARCH_WORDS in plan_turns("image+text", capital, "X")[0]
    first, _ = plan_turns("text", capital, "Togo", decision="fact")
    assert f"Its capital I look up: {answer_text('Togo')}</reason><text_search>" in first
    # flag questions keep their words: they decide on the flag itself
    flag = next(s for s in world_samples if s.extra.get("qtype") == "flag")
    for plan in ("answer", "image"):
        assert plan_turns(plan, flag, "Togo", decision="fact") == plan_turns(plan, flag, "Togo")
    for plan in ("answer", "image"):
        assert plan_turns(plan, flag, "Togo", decision="flag-fact") == plan_turns(
            plan, flag, "Togo"
        )
    with pytest.raises(ValueError, match="decision 'topic' is not one of"):
        plan_turns("answer", capital, "Togo", decision="topic")
    with pytest.raises(ValueError, match="decision 'topic' is not one of"):
        SFTConfig(decision="topic")


def test_the_flag_fact_decision_names_the_flag_before_deciding_on_the_fact(world_samples):
    from mmsr.rollout.forcing import SEARCH_WORDS
    from mmsr.train.align import answer_text

    capital = next(s for s in world_samples if s.extra.get("qtype") == "capital")
    asks = "<reason>The question asks for the capital. "
    (turn,) = plan_turns("answer", capital, "Togo", decision="flag-fact", names_flag=True)
    assert turn.startswith(f"{asks}{answer_text('Togo')} Its capital I know. The capital of Togo")
    # a flag it names, a fact it does not know: the image first, decided by the fact's words
    first, _, _ = plan_turns("image+text", capital, "Togo", decision="flag-fact", names_flag=True)
    look = "Its capital I look up: first the flag, with the image.</reason><search><img></search>"
    assert first == f"{asks}{answer_text('Togo')} {look}"
    # a flag it cannot name: the flag's search words, as under "flag"
    first, _, _ = plan_turns("image+text", capital, "Togo", decision="flag-fact")
    assert first.startswith(asks + SEARCH_WORDS)
    assert first == plan_turns("image+text", capital, "Togo")[0]
    first, _ = plan_turns("text", capital, "Togo", decision="flag-fact", names_flag=True)
    search = "<text_search>Togo capital</text_search>"
    assert first == f"{asks}{answer_text('Togo')} Its capital I look up:</reason>{search}"


def test_scripts_speak_the_models_own_words_where_it_speaks_from_knowledge(world_samples):
    from mmsr.train.sft import (
        OwnWords,
        looks_like_an_answer,
        speak_own_words,
    )
    from mmsr.world.questions import TEMPLATES

    flag = next(s for s in world_samples if s.extra.get("qtype") == "flag")
    capital = next(s for s in world_samples if s.extra.get("qtype") == "capital")
    other = next(s for s in world_samples if s.extra.get("qtype") == "capital" and s is not capital)
    asked = []

    def speaker(samples, starts):  # a fake model
        asked.extend(zip(samples, starts, strict=True))
        if starts[0].endswith(" is"):  # facts: a real one, or the country again
            return ["Paris. It is" if s.id == capital.id else "Chad." for s in samples]
        # names: nothing, Chad, or not an entity
        return [
            "" if s.id == flag.id else "Chad. I know" if s.id == capital.id else "Chad, a"
            for s in samples
        ]

    plans = ["answer", "answer", "text", "image", "answer"]
    chosen = [flag, capital, capital, flag, other]
    own = speak_own_words(speaker, chosen, plans, lambda t: t == "Chad")
    assert own == [
        OwnWords(name=None, answer=None),  # said no name
        OwnWords(name="Chad", answer="Paris"),
        OwnWords(name="Chad", answer=None),  # a text plan gives no answer at once
        None,
        OwnWords(name="Chad", answer=None),  # "Chad" again: no answer
    ]
    names = [(s, start) for s, start in asked if not start.endswith(" is")]
    assert all(s.question == TEMPLATES["flag"] for s, _ in names)  # named as a flag question
    assert all(start.endswith("belongs to. This is the flag of") for _, start in names)
    fact_starts = [start for _, start in asked if start.endswith(" is")]
    assert fact_starts[0].endswith(
        "The question asks for the capital. This is the flag of Chad. The capital of Chad is"
    )
    assert looks_like_an_answer("Paris", "capital")
    assert not looks_like_an_answer("The capital of Chad", "capital")
    assert not looks_like_an_answer("the Chad", "capital", name="Chad")
    (turn,) = plan_turns("answer", capital, "Togo", own=own[1])
    assert "the flag of Chad. The capital of Chad is Paris.</reason><answer>Paris</answer>" in turn


def test_with_the_model_speaking_each_question_takes_the_plan_its_knowledge_calls_for():
    from mmsr.train.sft import OwnWords, fact_start, plan_from_knowledge
    from mmsr.world.load import load_world

    world = load_world()
    samples = random.Random(0).sample(world.questions_in("train"), 400)
    flag = next(s for s in samples if is_flag_question(s))
    capital = next(s for s in samples if s.extra.get("qtype") == "capital")
    right = capital.extra["entity"]
    assert plan_from_knowledge(flag, OwnWords("X", "X"), flag.extra["entity"]) == "answer"
    assert plan_from_knowledge(flag, OwnWords("X", "X"), None) == "image"
    assert plan_from_knowledge(capital, OwnWords("X", capital.answer), right) == "answer"
    assert plan_from_knowledge(capital, OwnWords("X", "Nowhere"), right) == "text"
    assert plan_from_knowledge(capital, OwnWords("X", None), right) == "text"
    assert plan_from_knowledge(capital, OwnWords("X", capital.answer), "zz") == "image+text"
    # not trusting its own name: a fact it does not know is looked up after an image search
    assert plan_from_knowledge(capital, OwnWords("X", None), right, False) == "image+text"
    assert plan_from_knowledge(capital, OwnWords("X", capital.answer), right, False) == "answer"

    # A fake model: names the flags of entities whose code starts a-m right, others
    # wrong; knows the facts of a-f.
    def knows(sample, letters):  # by the id: a flag question asked keeps only its qtype
        return sample.id.split("-")[1][0] in letters

    def speaker(asked, starts):
        if not starts[0].endswith("This is the flag of"):  # the facts' sentences
            return [f"{s.answer}." if knows(s, "abcdef") else "Nowhere." for s in asked]
        other = world.entity("fr").name
        return [world.entity(s.id.split("-")[1]).name if knows(s, "abcdefghijklm") else other
                for s in asked]  # fmt: skip

    chosen, scripts, plans = world_sft_scripts(samples, 200, p_direct=0.3, seed=0, speaker=speaker)
    assert 0.2 < plans.count("answer") / 200 < 0.4
    for sample, script, plan in zip(chosen, scripts, plans, strict=True):
        if is_flag_question(sample):
            assert plan == ("answer" if knows(sample, "abcdefghijklm") else "image")
        elif not knows(sample, "abcdefghijklm"):
            assert plan == "image+text"
        else:
            assert plan == ("answer" if knows(sample, "abcdef") else "text"), sample.id
        if plan == "answer" and not is_flag_question(sample):
            said = (
                f"{fact_start(sample, world.entity(sample.extra['entity']).name)} {sample.answer}."
            )
            assert script(0, []).endswith(f"{said}</reason><answer>{sample.answer}</answer>")

    # not trusting its own name: no text plan; its draws search the image first, so the
    # search plans keep their share
    chosen, _, untrusted = world_sft_scripts(samples, 200, p_direct=0.3, seed=0,
                                             speaker=speaker, trust_own_name=False)  # fmt: skip
    assert "text" not in untrusted and 0.2 < untrusted.count("answer") / 200 < 0.4
    assert 0.35 < untrusted.count("image+text") / 200 < 0.6  # expected 0.7 x 2/3
    for sample, plan in zip(chosen, untrusted, strict=True):
        if not is_flag_question(sample) and not knows(sample, "abcdef"):
            assert plan == "image+text", sample.id

    # "flag-fact": whether the flag was named right (by the model's own words) picks the
    # first turn's words of an image search
    chosen, scripts, plans = world_sft_scripts(
        samples, 200, p_direct=0.3, seed=0, speaker=speaker, trust_own_name=False,
        decision="flag-fact")  # fmt: skip
    searched = [(s, script(0, [])) for s, script, plan in zip(chosen, scripts, plans, strict=True)
                if plan == "image+text"]  # fmt: skip
    named = [first for s, first in searched if knows(s, "abcdefghijklm")]
    unnamed = [first for s, first in searched if not knows(s, "abcdefghijklm")]
    assert named and unnamed
    assert all("This is the flag of" in first and "I look up:" in first for first in named)
    assert all("I cannot tell which flag this is" in first for first in unnamed)

    # keeping wrong names: a flag named wrongly keeps the model's name before the fact's
    # decision, and the turn after the image search names the flag itself
    chosen, scripts, plans = world_sft_scripts(
        samples, 200, p_direct=0.3, seed=0, speaker=speaker, trust_own_name=False,
        decision="flag-fact", keep_wrong_names=True)  # fmt: skip
    wrong = [(s, script) for s, script, plan in zip(chosen, scripts, plans, strict=True)
             if plan == "image+text" and not knows(s, "abcdefghijklm")]  # fmt: skip
    assert wrong
    france = world.entity("fr").name
    for sample, script in wrong:
        assert f"This is the flag of {france}." in script(0, []) and "I look up:" in script(0, [])
        gold = world.entity(sample.extra["entity"]).name
        assert f"The results show the flag of {gold};" in script(1, [])
        assert f"<text_search>{gold} " in script(1, [])

    # except on the question types named: their wrong names take the flag's words again,
    # while the other types keep theirs
    chosen, scripts, plans = world_sft_scripts(
        samples, 200, p_direct=0.3, seed=0, speaker=speaker, trust_own_name=False,
        decision="flag-fact", keep_wrong_names=True,
        keep_wrong_names_except=["continent"])  # fmt: skip
    wrong = [(s.extra["qtype"], script(0, [])) for s, script, plan
             in zip(chosen, scripts, plans, strict=True)
             if plan == "image+text" and not knows(s, "abcdefghijklm")]  # fmt: skip
    continents = [first for qtype, first in wrong if qtype == "continent"]
    others = [first for qtype, first in wrong if qtype != "continent"]
    assert continents and others
    assert all("I cannot tell which flag this is" in first for first in continents)
    assert all(f"This is the flag of {france}." in first for first in others)


def test_flag_and_attribute_questions_answer_at_once_equally_often(world_samples):
    samples, _, plans = world_sft_scripts(world_samples * 5, 600, p_direct=0.3, seed=4)
    for flags in (True, False):
        kind = [p for s, p in zip(samples, plans, strict=True) if is_flag_question(s) == flags]
        assert 0.2 < kind.count("answer") / len(kind) < 0.4, (flags, len(kind))


def test_the_engine_speaker_continues_the_replays_first_turn(tiny_policy, world_samples):
    from mmsr.train.sft import engine_speaker

    _, engine = tiny_engine(tiny_policy)
    replies = engine_speaker(engine, batch_size=2, max_new_tokens=4)(
        world_samples[:3], ["<reason>The question", "<reason>", "<reason>A"]
    )
    assert len(replies) == 3 and all(isinstance(r, str) for r in replies)


def test_recorded_speaker_reads_back_its_replies_and_speaks_only_what_is_new(
    world_samples, tmp_path
):
    from mmsr.train.sft import RecordedSpeaker

    asked: list[tuple[str, str]] = []

    def speaker(samples, starts):  # a fake model
        asked.extend((s.id, start) for s, start in zip(samples, starts, strict=True))
        return [f"{s.id} said after {start}" for s, start in zip(samples, starts, strict=True)]

    samples = world_samples[:3]
    first = RecordedSpeaker(speaker, lambda s: f"Q: {s.question}", None)
    said = first(samples, ["a", "b", "c"])
    assert len(asked) == 3 and first.spoken == 3 and first.reused == 0
    first.save(tmp_path / "words.json")
    again = RecordedSpeaker(speaker, lambda s: f"Q: {s.question}", str(tmp_path / "words.json"))
    assert again(samples, ["a", "b", "c"]) == said and len(asked) == 3  # nothing spoken
    assert again(samples[:2], ["a", "changed"])[1].endswith("after changed")
    assert asked[-1] == (samples[1].id, "changed") and again.spoken == 1
    other_prompt = RecordedSpeaker(speaker, lambda s: "another", str(tmp_path / "words.json"))
    other_prompt(samples[:1], ["a"])
    assert other_prompt.spoken == 1  # a changed prompt is spoken anew
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="bad.json"):
        RecordedSpeaker(speaker, str, str(tmp_path / "bad.json"))
