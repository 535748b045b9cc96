"""The nano replication end to end on the tiny model (no search tools, tiny sizes): every
stage runs and the results files hold every target computed from the metrics; a rerun
reuses every stage; a changed GRPO option redoes only the GRPO runs and their evaluations;
--fresh deletes only the replication's own files; the bench entry point's options."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from mmsr.data.io import read_samples
from mmsr.replicate import ReplicateConfig, clear_stages, run_replication
from mmsr.replicate import run as replicate_run
from mmsr.replicate.heldout import check_heldout
from mmsr.replicate.results import compute_targets, search_payoff
from mmsr.stages import finish, reusable


def tiny_config(policy: Path, out: Path, **changes) -> ReplicateConfig:
    sizes = {
        "train_pool": 4, "test_pool": 3, "balance_k": 2, "balance_threshold": 1,
        "balance_rag_k": 0, "balance_max_new_tokens": 4, "sft_steps": 1, "sft_trajectories": 4,
        "grpo_steps": 1, "prompts_per_step": 1, "group_size": 2, "max_new_tokens": 6,
        "freeze_layers": 1,
    }  # fmt: skip
    return ReplicateConfig(
        out=str(out), policy=str(policy), search_config="none", **{**sizes, **changes}
    )


def statuses(results) -> dict[str, str]:
    return {stage["name"]: stage["status"] for stage in results["stages"]}


@pytest.mark.slow
def test_replication_runs_every_stage_then_reuses_them(tiny_qwen_vl_dir, tmp_path, monkeypatch):
    out = tmp_path / "rep"
    console = Console(record=True, width=200)
    results = run_replication(tiny_config(tiny_qwen_vl_dir, out), console)
    text = console.export_text()
    assert "Balance world:test" in text and "GRPO no-penalty" in text and "Results" in text
    ran = statuses(results)
    assert set(ran.values()) == {"ran"} and len(ran) == 3 + 2 + 1 + 3 + 10
    # the training stages ran in fresh processes, which wrote their models here
    assert "in a fresh process" in text
    assert all((out / stage / "final").is_dir() for stage in ("sft", "grpo-main"))
    # every model x mode of the plan was evaluated on the balanced test set
    assert {m: sorted(v) for m, v in results["evals"].items()} == {
        "sft": ["direct", "ondemand", "rag-model"], "main": ["direct", "ondemand", "rag-model"],
        "no-penalty": ["direct", "ondemand"], "unbalanced": ["direct", "ondemand"],
    }  # fmt: skip
    assert results["evals"]["main"]["rag-model"]["sr"] == 1.0  # the RAG workflow searches
    balance = results["balance"]
    assert balance["test"]["input"] == 3 and balance["train"]["input"] == 4
    assert balance["train"]["unbalanced"]["output"] == balance["train"]["output"]
    assert set(results["grpo_steps"]) == {"grpo-main", "grpo-no-penalty", "grpo-unbalanced"}
    assert all("correct_no_search" in steps[0] for steps in results["grpo_steps"].values())
    # the GRPO runs sample at the replication's temperature, not the preset's 1.0
    resolved = yaml.safe_load((out / "grpo-main" / "config.yaml").read_text())
    assert resolved["engine"]["temperature"] == ReplicateConfig.grpo_temperature == 0.7

    saved = json.loads((out / "results.json").read_text())
    assert saved["targets"] == compute_targets(saved["evals"])  # computed, not written
    assert len(saved["targets"]) == 7
    assert all(t["met"] is not None or t["vacuous"] for t in saved["targets"])
    markdown = (out / "results.md").read_text()
    assert set(saved["search_payoff"]) == set(saved["grpo_steps"])  # from rollouts.jsonl
    assert "| search_required |" in markdown or "| search_free |" in markdown
    # where each model searched against what it knew, from its direct and on-demand runs
    assert set(saved["search_decisions"]) == {"sft", "main", "no-penalty", "unbalanced"}
    assert saved["search_decisions"]["main"]["n"] == balance["test"]["output"]
    assert saved["search_decisions"]["main"]["acc_direct"] == pytest.approx(
        saved["evals"]["main"]["direct"]["acc"]
    )
    assert "Right search decisions" in markdown
    assert set(saved["search_paths"]) == set(saved["search_decisions"])
    n_paths = sum(c["n"] for c in saved["search_paths"]["main"].values())
    assert n_paths == balance["test"]["output"] and "## Search paths" in markdown
    by_type = saved["search_by_type"]["main"]  # searches by question type, on demand
    assert set(saved["search_by_type"]) == set(saved["search_paths"])
    assert sum(c["n"] for t in by_type.values() for c in t.values()) == balance["test"]["output"]
    assert "## Search decisions by question type" in markdown and "majority:" in markdown
    for target in saved["targets"]:
        assert target["name"] in markdown
    for plot in ("grpo_curves", "behaviour", "correct_no_search", "search_by_category"):
        png = Path(saved["plots"][plot])
        assert png.read_bytes()[:4] == b"\x89PNG" and f"plots/{png.name}" in markdown

    again = run_replication(tiny_config(tiny_qwen_vl_dir, out), Console(quiet=True))
    checks = ("The offline world", "The eye", "Search tools")  # nothing to reuse: they check
    reused = [s for name, s in statuses(again).items() if name not in checks]
    assert reused == ["reused"] * (len(ran) - len(checks))
    assert again["evals"] == results["evals"]
    # each reused stage still reports what it took when it ran, in results.md too
    took = {stage["name"]: stage["seconds"] for stage in results["stages"]}
    for stage in again["stages"]:
        if stage["status"] == "reused":
            assert stage["ran_seconds"] == pytest.approx(took[stage["name"]])
    assert "when it ran)" in (out / "results.md").read_text()

    # the targets again on a held-out split, with the run's own options; then reused
    console = Console(record=True, width=200)
    before = (out / "results.md").read_text()
    held = check_heldout(out, "val", console)
    assert held["balance"]["input"] == 3 and held["evals"].keys() == results["evals"].keys()
    assert held["targets"] == compute_targets(held["evals"])
    assert all((out / "eval-val" / f"{m}-{mode}" / "done.json").is_file()
               for m, modes in held["evals"].items() for mode in modes)  # fmt: skip
    assert "world:val (held out)" in (out / "heldout-val.md").read_text()
    assert (out / "results.md").read_text() == before  # left as it was
    again_held = check_heldout(out, "val", Console(quiet=True))
    assert again_held["evals"] == held["evals"]
    with pytest.raises(ValueError, match="--heldout 'test'"):
        check_heldout(out, "test")
    with pytest.raises(FileNotFoundError, match="finish the replication"):
        check_heldout(tmp_path / "nothing", "val")

    # GRPO options: the balance and SFT stages stay, the GRPO runs and what they feed redo;
    # the GRPO runs train under them
    changed = tiny_config(tiny_qwen_vl_dir, out, grpo_steps=2, grpo_std_norm=False,
                          grpo_kl_coef=0.05, grpo_std_floor=0.1, grpo_draw="by_type",
                          grpo_seed=7)  # fmt: skip
    more = statuses(run_replication(changed, Console(quiet=True)))
    for run in ("grpo-main", "grpo-no-penalty"):
        resolved = yaml.safe_load((out / run / "config.yaml").read_text())
        assert resolved["steps"] == 2 and resolved["grpo"]["norm_adv_by_std"] is False
        assert resolved["grpo"]["kl_coef"] == 0.05 and resolved["grpo"]["adv_std_floor"] == 0.1
        assert resolved["draw"] == "by_type" and resolved["run"]["seed"] == 7
    redone = {name for name, status in more.items() if status == "ran"}
    assert {"The offline world", "Search tools"} < redone
    assert all(more[n] == "reused" for n in more if n.startswith(("Balance", "SFT")))
    assert all(more[n] == "ran" for n in more if n.startswith("GRPO"))
    assert all(more[n] == "reused" for n in more if n.startswith("Evaluate sft"))
    assert all(more[n] == "ran" for n in more if n.startswith(("Evaluate main", "Evaluate no")))

    # an SFT option redoes SFT and all after it; the SFT run trains under it
    weighted = tiny_config(tiny_qwen_vl_dir, out, grpo_steps=2, sft_answer_weight=3.0,
                           sft_trust_own_name=False, sft_decision="fact")  # fmt: skip
    redo = statuses(run_replication(weighted, Console(quiet=True)))
    assert all(redo[n] == "reused" for n in redo if n.startswith("Balance"))
    assert all(redo[n] == "ran" for n in redo if n.startswith(("SFT", "GRPO", "Evaluate")))
    resolved = yaml.safe_load((out / "sft" / "config.yaml").read_text())
    assert resolved["answer_weight"] == 3.0 and resolved["trust_own_name"] is False
    assert resolved["decision"] == "fact"

    # --train-rag-check: after SFT the SFT model checks the train pool with search (scripted
    # here: the tiny model has no tools), and every GRPO run trains on the checked sets
    from mmsr.eval.answerer import EngineAnswerer

    monkeypatch.setattr(
        EngineAnswerer,
        "answer_with_search",
        lambda self, samples, k, seed: [[s.answer] for s in samples],
    )
    checked = dataclasses.replace(weighted, train_rag_check=2)
    results = run_replication(checked, Console(quiet=True))
    redo = statuses(results)
    assert redo["Drop the train questions the SFT model cannot answer with search"] == "ran"
    assert all(redo[n] == "reused" for n in redo if n.startswith(("Balance", "SFT")))
    assert all(redo[n] == "ran" for n in redo if n.startswith("GRPO"))
    for run, data in (("grpo-main", "balanced"), ("grpo-unbalanced", "unbalanced")):
        resolved = yaml.safe_load((out / run / "config.yaml").read_text())
        assert resolved["data"] == str(out / "balance-train-sft" / f"{data}.parquet")
    assert results["balance"]["train-checked"]["checked_with_search"] == 2
    assert "checked by the SFT model's RAG" in (out / "results.md").read_text()


def test_the_question_as_query_rag_is_evaluated_on_request():
    plain = replicate_run.evaluation_plan(ablations=False)
    both = replicate_run.evaluation_plan(ablations=False, rag_question=True)
    assert set(both) - set(plain) == {("sft", "rag"), ("main", "rag")}
    assert ("main", "rag-model") in plain and len(plain) == 6


def test_a_failing_training_stage_fails_the_replication_from_its_fresh_process(tmp_path):
    config = ReplicateConfig(out=str(tmp_path), search_config="none")
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        replicate_run.training_stage(
            replicate_run.sft_stage, config, (tmp_path / "sft", {"k": 1}), None,
            Console(quiet=True), {"status": "ran"}, start=str(tmp_path / "no-such-model"),
        )  # fmt: skip


def test_search_payoff_counts_right_rollouts_searched_or_not(tmp_path):
    rows = [
        ("search_required", 1, 0, 1.0), ("search_required", 0, 1, 0.0),
        ("search_required", 0, 0, 0.0), ("search_free", 0, 0, 1.0), ("search_free", 1, 1, 0.0),
    ]  # fmt: skip
    path = tmp_path / "rollouts.jsonl"
    path.write_text("".join(
        json.dumps({"category": c, "n_image_search": i, "n_text_search": t,
                    "reward": {"acc": acc, "score": acc}}) + "\n"
        for c, i, t, acc in rows
    ))  # fmt: skip
    assert search_payoff(path) == {
        "search_required": {"searched": [1, 2], "no search": [0, 1]},
        "search_free": {"no search": [1, 1], "searched": [0, 1]},
    }


def test_targets_come_from_the_numbers():
    def metrics(acc, sr, free=0.0, answered=1.0):
        behaviour = {"correct_no_search": free}
        return {"acc": acc, "sr": sr, "answered": answered, "behaviour": behaviour}

    evals = {
        "sft": {"ondemand": metrics(0.30, 0.6, free=0.10)},
        "main": {"direct": metrics(0.20, 0.0), "rag": metrics(0.40, 1.0),
                 "ondemand": metrics(0.44, 0.5, free=0.25)},
        "no-penalty": {"ondemand": metrics(0.45, 0.9)},
        "unbalanced": {"ondemand": metrics(0.40, 0.4)},
    }  # fmt: skip
    verdicts = [t["met"] for t in compute_targets(evals)]
    assert verdicts == [True, True, True, True, False, None, None]  # 6, 7: no SFT baselines
    # 6, 7: targets 1 and 2 against the model before RL, as the paper's baselines
    evals["sft"].update(direct=metrics(0.25, 0.0), rag=metrics(0.42, 1.0))
    paper = compute_targets(evals)[5:]
    assert paper[0]["values"]["acc_rag"] == 0.42 and paper[0]["met"] is False
    assert "sft:rag" in paper[0]["rule"] and paper[1]["values"]["acc_direct"] == 0.25
    assert paper[1]["met"] is False  # 0.44 < 0.25 + 0.20
    evals["sft"]["direct"] = metrics(0.23, 0.0)
    assert compute_targets(evals)[6]["met"] is True
    evals["main"]["ondemand"]["sr"] = 0.51  # more than half of RAG's searches
    assert compute_targets(evals)[0]["met"] is False
    # a stronger RAG variant (model-written query) is the one to beat
    evals["main"]["ondemand"]["sr"] = 0.5
    evals["main"]["rag-model"] = metrics(0.42, 1.0)
    target = compute_targets(evals)[0]
    assert target["values"]["acc_rag"] == 0.42 and target["met"] is False
    evals["main"]["rag-model"] = metrics(0.38, 1.0)
    assert compute_targets(evals)[0]["values"]["acc_rag"] == 0.40
    del evals["unbalanced"]  # an ablation that did not run is not measured, not failed
    assert compute_targets(evals)[4]["met"] is None
    # a RAG baseline that hardly ever answers is none: beating it proves nothing
    evals["main"]["rag"]["answered"] = 0.4
    target = compute_targets(evals)[0]
    assert target["met"] is None and "answered 40%" in target["vacuous"]
    # a bound met exactly is met, though 0.4 + 0.2 > 0.6 in floats (6 of 10 against 4 of 10)
    evals["main"].update(direct=metrics(0.4, 0.0), ondemand=metrics(0.6, 0.3))
    assert 0.6 < 0.4 + 0.2 and compute_targets(evals)[1]["met"] is True
    evals["main"]["ondemand"]["acc"] = 0.5
    assert compute_targets(evals)[1]["met"] is False


def test_shipped_sets_are_copied_only_under_the_same_params(tmp_path, monkeypatch):
    shipped = tmp_path / "sets" / "balance-train"
    shipped.mkdir(parents=True)
    for name in ("balanced.parquet", "balanced.balance.json", "unbalanced.parquet"):
        (shipped / name).write_text(name)
    params = {"split": "train", "pool": 512, "base": {"eye": "abc"}}
    finish(shipped, params, {"balanced": "runs/x/balance-train/balanced.parquet",
                             "unbalanced": "runs/x/balance-train/unbalanced.parquet",
                             "counts": {"output": 2}, "minutes": 10.4})  # fmt: skip
    monkeypatch.setattr(replicate_run, "SHIPPED_SETS", tmp_path / "sets")
    console = Console(record=True, width=200)
    folder = tmp_path / "run" / "balance-train"

    other = {**params, "pool": 64}
    assert replicate_run.copy_shipped_sets("train", other, folder, console) is None
    assert not folder.exists()  # nothing started: the stage balances from scratch

    done = replicate_run.copy_shipped_sets("train", params, folder, console)
    assert done["balanced"] == str(folder / "balanced.parquet") and done["shipped"] is True
    assert done["unbalanced"] == str(folder / "unbalanced.parquet")
    assert (folder / "balanced.balance.json").read_text() == "balanced.balance.json"
    assert reusable(folder, params) == done  # a rerun reuses the copy like its own work
    assert "--rebalance" in console.export_text()


@pytest.mark.parametrize("split", ["test", "train"])
def test_the_shipped_sets_fit_the_default_options(split, tmp_path):
    """A new default balancing option or a new shipped eye needs new shipped sets (a full
    run's balance stages, docs/REPLICATION.md), else every replication balances anew."""
    config = ReplicateConfig(out=str(tmp_path))
    eye = replicate_run.eye_stage(config, tmp_path / "eye", Console(quiet=True), {})
    params = replicate_run.balance_params(config, split, eye)
    shipped = reusable(replicate_run.SHIPPED_SETS / f"balance-{split}", params)
    assert shipped is not None, f"mmsr/replicate/sets/balance-{split} was made with other options"
    samples = read_samples(replicate_run.SHIPPED_SETS / f"balance-{split}" / "balanced.parquet")
    counts = shipped["counts"]["output_categories"]
    assert counts["search_free"] == counts["search_required"] > 0  # target ratio 1.0
    assert len(samples) == shipped["counts"]["output"] == 2 * counts["search_free"]
    assert {s.category for s in samples} == {"search_free", "search_required"}


def test_the_train_set_is_drawn_to_its_ratio_from_the_shipped_decisions(tmp_path):
    config = ReplicateConfig(out=str(tmp_path), train_target_ratio=2.125)  # the paper's
    console = Console(record=True, width=200)
    eye = replicate_run.eye_stage(config, tmp_path / "eye", console, {})
    folder = tmp_path / "balance-train"
    # no tools and no model: drawing again must not need them
    done = replicate_run.balance_stage(config, "train", folder, eye, None, console, {})
    shipped = json.loads((replicate_run.SHIPPED_SETS / "balance-train" / "done.json").read_text())
    free = shipped["counts"]["output_categories"]["search_free"]
    required = round(config.train_target_ratio * free)
    assert done["counts"]["output_categories"] == {"search_free": free, "search_required": required}
    samples = read_samples(folder / "balanced.parquet")
    assert len(samples) == done["counts"]["output"] and all(s.images[0].bytes for s in samples)
    assert len(read_samples(folder / "unbalanced.parquet")) == len(samples)
    assert "no model answers" in console.export_text()
    again = replicate_run.balance_stage(config, "train", folder, eye, None, console, {})
    assert again == done  # finished: reused
    # classified under other options: no shipped decisions fit, the stage must balance
    other = replicate_run.balance_params(dataclasses.replace(config, balance_k=2), "train", eye)
    assert replicate_run.shipped_decisions("train", other) is None


def test_the_sft_model_drops_the_train_questions_search_does_not_answer(
    tiny_qwen_vl_dir, tmp_path, monkeypatch
):
    """--train-rag-check: the SFT model's RAG answers over the train pool's search_required
    questions (scripted here: right on every other one) decide which stay; the balanced
    and unbalanced sets are drawn again from the survivors; a rerun reuses the stage."""
    from mmsr.eval.answerer import EngineAnswerer
    from mmsr.replicate.recheck import recheck_stage

    config = ReplicateConfig(out=str(tmp_path), train_rag_check=12, max_new_tokens=4)
    console = Console(record=True, width=200)
    eye = replicate_run.eye_stage(config, tmp_path / "eye", console, {})
    train = replicate_run.balance_stage(config, "train", tmp_path / "balance-train", eye, None,
                                        console, {})  # fmt: skip
    asked: list[list[str]] = []

    def every_other(self, samples, k, seed):
        assert k == 1 and self.temperature == 0  # once, greedy
        asked.append([s.id for s in samples])
        return [[s.answer if i % 2 == 0 else "nowhere"] for i, s in enumerate(samples)]

    monkeypatch.setattr(EngineAnswerer, "answer_with_search", every_other)
    folder = tmp_path / "balance-train-sft"
    done = recheck_stage(config, folder, train, str(tiny_qwen_vl_dir), {"sft": 1}, None,
                         console, {})  # fmt: skip
    counts = done["counts"]
    assert len(asked[0]) == 12 and counts["checked_with_search"] == 12
    assert counts["dropped_unanswerable"] == 6
    assert counts["output_categories"] == {"search_free": 6, "search_required": 6}  # ratio 1
    answerable = set(asked[0][::2])
    balanced = read_samples(folder / "balanced.parquet")
    assert {s.id for s in balanced if s.category == "search_required"} == answerable
    unbalanced = read_samples(folder / "unbalanced.parquet")
    # the pool's mix after the check: 14 search_free against ~half of its 498 required;
    # as many as the balanced set where enough survived (here 6 required)
    mix = counts["unbalanced"]["output_categories"]
    assert mix == {"search_free": 1, "search_required": 6} and len(unbalanced) == 7
    assert {s.id for s in unbalanced if s.category == "search_required"} <= answerable
    assert "6 dropped as unanswerable" in console.export_text()
    assert recheck_stage(config, folder, train, str(tiny_qwen_vl_dir), {"sft": 1}, None,
                         console, {}) == done and len(asked) == 1  # fmt: skip

    monkeypatch.setattr(
        EngineAnswerer,
        "answer_with_search",
        lambda self, samples, k, seed: [["nowhere"] for _ in samples],
    )
    with pytest.raises(ValueError, match="raise --train-rag-check"):
        recheck_stage(dataclasses.replace(config, train_rag_check=3), folder, train,
                      str(tiny_qwen_vl_dir), {"sft": 1}, None, console, {})  # fmt: skip
    with pytest.raises(ValueError, match="--train-rag-check -1 must be >= 0"):
        ReplicateConfig(train_rag_check=-1)


def test_fresh_deletes_only_what_the_replication_wrote(tmp_path):
    for name in ("eye", "balance-train", "grpo-main/final", "eval/main-rag", "plots", "mine"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "results.md").write_text("x")
    (tmp_path / "notes.txt").write_text("keep")
    clear_stages(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "notes.txt"]


def test_bench_options_map_to_the_config(bench_script):
    bench = bench_script("replicate_nano")
    args = ["--quick", "--grpo-steps", "3", "--no-ablations", "--threads", "1",
            "--search-penalty", "0.2"]  # fmt: skip
    config, threads, heldout = bench.parse_args(args)
    assert threads == 1 and config.grpo_steps == 3 and config.ablations is False
    assert config.search_penalty == 0.2 and config.train_pool == 12  # from --quick
    assert heldout is None and bench.parse_args(["--heldout", "val"])[2] == "val"
    default, _, _ = bench.parse_args([])
    assert default == ReplicateConfig()
    assert bench.main(["--balance-threshold", "9"]) == 2  # the error names the option
    assert bench.parse_args(["--train-target-ratio", "2"])[0].train_target_ratio == 2.0
    with pytest.raises(ValueError, match="--train-target-ratio"):
        ReplicateConfig(train_target_ratio=0)
    assert bench.parse_args(["--grpo-kl-coef", "0.3"])[0].grpo_kl_coef == 0.3
    with pytest.raises(ValueError, match="--grpo-kl-coef"):
        ReplicateConfig(grpo_kl_coef=-1)
    assert bench.parse_args(["--grpo-lr", "2e-5"])[0].grpo_lr == 2e-5
    assert bench.parse_args(["--grpo-std-floor", "0.1"])[0].grpo_std_floor == 0.1
    with pytest.raises(ValueError, match="--grpo-std-floor -0.1"):
        ReplicateConfig(grpo_std_floor=-0.1)
    assert bench.parse_args(["--grpo-forced-search", "1"])[0].grpo_forced_search == 1
    assert bench.parse_args(["--grpo-forced-answer", "1"])[0].grpo_forced_answer == 1
    assert bench.parse_args(["--grpo-forced-at", "reasoning"])[0].grpo_forced_at == "reasoning"
    with pytest.raises(ValueError, match="--grpo-forced-at 'start'"):
        ReplicateConfig(grpo_forced_at="start")
    assert bench.parse_args(["--grpo-draw", "by_type"])[0].grpo_draw == "by_type"
    assert bench.parse_args(["--grpo-seed", "2"])[0].grpo_seed == 2
    assert bench.parse_args(["--train-rag-check", "96"])[0].train_rag_check == 96
    with pytest.raises(ValueError, match="--grpo-seed -1 must be >= 0"):
        ReplicateConfig(grpo_seed=-1)
    with pytest.raises(ValueError, match="--grpo-draw 'types': choose one of"):
        ReplicateConfig(grpo_draw="types")
    with pytest.raises(ValueError, match="--grpo-forced-search 2 \\+ --grpo-forced-answer 2"):
        ReplicateConfig(grpo_forced_search=2, grpo_forced_answer=2)
    assert bench.parse_args(["--sft-answer-weight", "4"])[0].sft_answer_weight == 4.0
    assert bench.parse_args(["--sft-decision", "fact"])[0].sft_decision == "fact"
    with pytest.raises(ValueError, match="--sft-decision 'topic': choose one of"):
        ReplicateConfig(sft_decision="topic")
    args = ["--sft-decision", "flag-fact", "--sft-keep-wrong-names"]
    assert bench.parse_args(args)[0].sft_keep_wrong_names
    with pytest.raises(ValueError, match="--sft-keep-wrong-names .* not 'fact'"):
        ReplicateConfig(sft_decision="fact", sft_keep_wrong_names=True)
    args += ["--sft-keep-wrong-names-except", "continent, capital"]
    assert bench.parse_args(args)[0].kept_names_except == ["continent", "capital"]
    with pytest.raises(ValueError, match="--sft-keep-wrong-names-except .* needs --sft-keep"):
        ReplicateConfig(sft_decision="flag-fact", sft_keep_wrong_names_except="continent")
    with pytest.raises(ValueError, match="--sft-keep-wrong-names-except: unknown .*'capitol'"):
        ReplicateConfig(sft_decision="flag-fact", sft_keep_wrong_names=True,
                        sft_keep_wrong_names_except="capitol")  # fmt: skip
    with pytest.raises(ValueError, match="--grpo-forced-at reasoning forces the 'flag'"):
        ReplicateConfig(sft_decision="fact", grpo_forced_search=1, grpo_forced_at="reasoning")


def test_bench_help_prints_every_option(capsys, bench_script):
    with pytest.raises(SystemExit) as stopped:
        bench_script("replicate_nano").parse_args(["--help"])
    assert stopped.value.code == 0
    assert "--sft-steps" in capsys.readouterr().out  # docstrings with "%" print too


def test_bad_option_is_named():
    with pytest.raises(ValueError, match="--grpo-steps"):
        ReplicateConfig(grpo_steps=0)
    with pytest.raises(ValueError, match="--balance-threshold"):
        ReplicateConfig(balance_k=2, balance_threshold=3)
    with pytest.raises(ValueError, match="--sft-answer-weight"):
        ReplicateConfig(sft_answer_weight=0)
    with pytest.raises(ValueError, match="--align"):
        ReplicateConfig(policy="some/folder", align=True)


def test_the_shipped_words_are_the_default_sfts_own(tmp_path):
    """The shipped eye's recorded words answer every question the default SFT asks base
    nano (a change of scripts, pool, seed or prompt that asks anything new needs new
    shipped words: a full run's sft/words.json, docs/REPLICATION.md), and a run with
    another eye speaks itself."""
    from mmsr.demo import sft_config
    from mmsr.eval.samples import load_eval_samples
    from mmsr.rollout.prompts import first_turn_text
    from mmsr.train.sft import RecordedSpeaker, world_sft_scripts

    config = ReplicateConfig(out=str(tmp_path))
    console = Console(quiet=True)
    eye = replicate_run.eye_stage(config, tmp_path / "eye", console, {})
    words = replicate_run.shipped_words(eye, console)
    assert words is not None
    sft = sft_config(config, tmp_path / "sft", words=words)

    def unrecorded(samples, starts):
        raise AssertionError(f"not in the shipped words: {samples[0].id} {starts[0]!r}")

    speaker = RecordedSpeaker(
        unrecorded, lambda s: first_turn_text(s.question, sft.engine.limits), sft.words
    )
    world_sft_scripts(load_eval_samples(sft.data), sft.n_trajectories, sft.p_direct,
                      sft.run.seed, speaker)  # fmt: skip
    assert speaker.reused > 3 * sft.n_trajectories and speaker.spoken == 0
    other = {**eye, "params": {**eye["params"], "eye": "another"}}
    assert replicate_run.shipped_words(other, console) is None
