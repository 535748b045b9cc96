"""Search-balanced data construction: the decisions, with a scripted answerer."""

from __future__ import annotations

import io
from collections import Counter

import pytest
from PIL import Image

from mmsr.data.balance import (
    BalanceConfig,
    build_balanced,
    classify,
    embed_images,
    read_decisions,
    recheck_with_search,
    redraw,
    stratified_sample,
    taxonomy_key,
    write_decisions,
)
from mmsr.data.io import read_samples, write_samples
from mmsr.data.record import Sample, SampleImage


def sample(i: int, tags=("geo", "capital")) -> Sample:
    return Sample(
        id=f"q{i}",
        question=f"question {i}?",
        answer=f"gold{i}",
        tags=list(tags),
        source="world/test",
    )


class ScriptedAnswerer:
    """Answers from a table: `direct[id]` right answers out of k, `rag[id]` right of rag_k."""

    def __init__(self, direct: dict[str, int], rag: dict[str, int]):
        self.direct, self.rag = direct, rag
        self.rag_asked: list[str] = []

    @staticmethod
    def _answers(s: Sample, right: int, k: int):
        return [s.answer] * right + ["wrong"] * (k - right - 1) + [None] * min(1, k - right)

    def answer_without_search(self, samples, k, seed):
        return [self._answers(s, self.direct.get(s.id, 0), k) for s in samples]

    def answer_with_search(self, samples, k, seed):
        self.rag_asked += [s.id for s in samples]
        return [self._answers(s, self.rag.get(s.id, 0), k) for s in samples]


def test_threshold_decides_the_category():
    samples = [sample(i) for i in range(4)]
    answers = [["gold0"] * 3 + ["x", None], ["gold1"] * 2 + ["x"] * 3, ["x"] * 5, ["GOLD3!"] * 5]
    decisions = classify(samples, answers, BalanceConfig(k=5, threshold=3))
    assert [d.category for d in decisions] == [
        "search_free",
        "search_required",
        "search_required",
        "search_free",
    ]
    assert [d.right_without_search for d in decisions] == [3, 2, 0, 5]
    with pytest.raises(ValueError, match="question q0: 4 answers"):
        classify(samples[:1], [["x"] * 4], BalanceConfig(k=5))


def test_unanswerable_are_dropped_and_ratio_is_balanced():
    samples = [sample(i) for i in range(10)]
    direct = {"q0": 5, "q1": 4, "q2": 3}  # 3 search_free, 7 search_required
    rag = {f"q{i}": 1 for i in range(3, 9)}  # q9 stays unanswerable
    answerer = ScriptedAnswerer(direct, rag)
    result = build_balanced(samples, answerer, BalanceConfig(k=5, threshold=3, target_ratio=1.0))
    assert answerer.rag_asked == [f"q{i}" for i in range(3, 10)]  # only search_required
    fates = {d.sample_id: d.fate for d in result.decisions}
    assert fates["q9"] == "dropped_unanswerable"
    counts = Counter(s.category for s in result.samples)
    assert counts == {"search_free": 3, "search_required": 3}
    assert result.counts["dropped_balance"] == 3 and result.counts["output"] == 6
    assert result.counts["classified"] == {"search_free": 3, "search_required": 7}
    # seeded: same seed, same set; another seed, (here) another set
    again = build_balanced(samples, ScriptedAnswerer(direct, rag), BalanceConfig(target_ratio=1.0))
    assert [s.id for s in again.samples] == [s.id for s in result.samples]
    other = build_balanced(
        samples, ScriptedAnswerer(direct, rag), BalanceConfig(target_ratio=1.0, seed=5)
    )
    assert [s.id for s in other.samples] != [s.id for s in result.samples]


def test_minority_required_downsamples_free_and_none_keeps_all():
    samples = [sample(i) for i in range(6)]
    direct = {f"q{i}": 5 for i in range(5)}  # 5 free, 1 required
    answerer = ScriptedAnswerer(direct, {"q5": 1})
    result = build_balanced(samples, answerer, BalanceConfig(target_ratio=0.5))
    assert Counter(s.category for s in result.samples) == {"search_free": 2, "search_required": 1}
    keep_all = build_balanced(samples, answerer, BalanceConfig(target_ratio=None))
    assert len(keep_all.samples) == 6


def test_redrawing_recorded_decisions_equals_balancing_to_that_ratio(tmp_path):
    samples = [sample(i, ("geo", "capital" if i % 2 else "flag")) for i in range(30)]
    direct = {f"q{i}": 5 for i in range(0, 30, 5)}  # 6 free, 24 required
    rag = {f"q{i}": 1 for i in range(29)}  # q29 stays unanswerable
    answerer = ScriptedAnswerer(direct, rag)
    first = build_balanced(samples, answerer, BalanceConfig(target_ratio=1.0))
    assert first.counts["output_categories"] == {"search_free": 6, "search_required": 6}
    write_decisions(first, tmp_path / "set.balance.json")
    recorded = read_decisions(tmp_path / "set.balance.json")
    assert recorded == first.decisions

    for ratio in (2.125, 0.5, None):
        config = BalanceConfig(target_ratio=ratio)
        again = redraw(samples, recorded, config)
        direct_run = build_balanced(samples, ScriptedAnswerer(direct, rag), config)
        assert [s.id for s in again.samples] == [s.id for s in direct_run.samples]
        assert [s.category for s in again.samples] == [s.category for s in direct_run.samples]
        assert again.counts == direct_run.counts
    paper = redraw(samples, recorded, BalanceConfig(target_ratio=2.125)).samples
    assert Counter(s.category for s in paper) == {"search_free": 6, "search_required": 13}
    keep_all = redraw(samples, recorded, BalanceConfig(target_ratio=None)).samples
    assert len(keep_all) == 29 and "q29" not in {s.id for s in keep_all}
    assert recorded == first.decisions  # the recorded decisions are left as they were

    with pytest.raises(ValueError, match="other questions"):
        redraw(samples[1:], recorded, BalanceConfig())


def test_downsampling_keeps_taxonomy_shares():
    import random

    samples = [sample(i, ("geo", "capital")) for i in range(60)]
    samples += [sample(i, ("geo", "flag")) for i in range(60, 90)]
    chosen = stratified_sample(samples, 30, random.Random(0), taxonomy_key)
    assert Counter(taxonomy_key(s) for s in chosen) == {"geo/capital": 20, "geo/flag": 10}
    assert len({s.id for s in chosen}) == 30


def test_bad_options_and_duplicates():
    with pytest.raises(ValueError, match="threshold=6"):
        BalanceConfig(k=5, threshold=6)
    with pytest.raises(ValueError, match="target_ratio"):
        BalanceConfig(target_ratio=0)
    with pytest.raises(ValueError, match="duplicate sample ids"):
        build_balanced([sample(1), sample(1)], ScriptedAnswerer({}, {}), BalanceConfig())


def test_embedded_images_make_a_self_contained_parquet(tmp_path):
    image_path = tmp_path / "imgs" / "q1.png"
    image_path.parent.mkdir()
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    image_path.write_bytes(buffer.getvalue())
    s = sample(1)
    s.images = [SampleImage(path=str(image_path))]
    embedded = embed_images(s)
    assert embedded.images[0].bytes == buffer.getvalue() and embedded.images[0].path == "q1.png"
    out = tmp_path / "elsewhere" / "out.parquet"
    write_samples([embedded], out)
    image_path.unlink()  # the parquet must not need the file any more
    back = read_samples(out)
    assert back[0].images[0].bytes == buffer.getvalue()
    with pytest.raises(FileNotFoundError, match="sample q1: image 0"):
        embed_images(s)


def test_a_later_model_drops_the_unanswerable_among_recorded_decisions():
    """Step 3 by another model over recorded decisions: a seeded draw of the kept
    search_required questions is checked, those it never gets right are dropped, the rest
    are left out unchecked; then the draw to the ratio."""
    samples = [sample(i) for i in range(12)]
    config = BalanceConfig(k=2, threshold=1, rag_k=0, target_ratio=1.0)
    recorded = build_balanced(samples, ScriptedAnswerer({"q0": 2, "q1": 2}, {}), config)
    assert recorded.counts["output_categories"] == {"search_free": 2, "search_required": 2}

    later = ScriptedAnswerer({}, {f"q{i}": 1 for i in range(2, 12, 2)})  # even ids answerable
    checked = BalanceConfig(k=2, threshold=1, rag_k=1, target_ratio=1.0)
    result = recheck_with_search(samples, recorded.decisions, later, checked, n_checked=6)
    assert len(later.rag_asked) == 6 and not {"q0", "q1"} & set(later.rag_asked)
    fates = {d.sample_id: d.fate for d in result.decisions}
    for sid in later.rag_asked:
        answerable = int(sid[1:]) % 2 == 0
        kept = ("kept", "dropped_balance")
        assert fates[sid] in (kept if answerable else ("dropped_unanswerable",))
    assert sum(f == "unchecked" for f in fates.values()) == 4
    assert {s.id for s in result.samples if s.category == "search_free"} == {"q0", "q1"}
    required = [s.id for s in result.samples if s.category == "search_required"]
    assert len(required) == 2 and all(int(sid[1:]) % 2 == 0 for sid in required)
    assert result.counts["checked_with_search"] == 6 and result.counts["unchecked"] == 4
    # the same draw again; the recorded decisions themselves are left as they were
    same = ScriptedAnswerer({}, later.rag)
    again = recheck_with_search(samples, recorded.decisions, same, checked, 6)
    assert [s.id for s in again.samples] == [s.id for s in result.samples]
    assert all(d.fate != "unchecked" for d in recorded.decisions)
    with pytest.raises(ValueError, match="rag_k=0 must be >= 1"):
        recheck_with_search(samples, recorded.decisions, later, config, 6)
    with pytest.raises(ValueError, match="other questions"):
        recheck_with_search(samples[1:], recorded.decisions, later, checked, 6)
