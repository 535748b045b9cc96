"""The world committed inside the package: loads, is large enough, clean and well split."""

from __future__ import annotations

import json
import re
from collections import defaultdict

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from mmsr.cli import app
from mmsr.data.record import check_sample
from mmsr.world.entities import SPLITS
from mmsr.world.flags import KNOWN_LOOKALIKES, MAX_FLAG_SIDE
from mmsr.world.info import world_info
from mmsr.world.text import LEFTOVER_ENTITY, LEFTOVER_TAG


def _has_html(text: str) -> bool:
    return bool(LEFTOVER_ENTITY.search(text) or LEFTOVER_TAG.search(text))


def test_entities_have_flags(shipped_world):
    entities = shipped_world.entities
    assert len(entities) >= 220
    assert len({e.id for e in entities}) == len(entities)
    for entity in entities:
        path = shipped_world.flag_path(entity.id)
        with Image.open(path) as img:
            assert max(img.size) <= MAX_FLAG_SIDE, path
        assert entity.name and entity.name not in entity.aliases
    assert shipped_world.entity("fr").name == "France"
    assert shipped_world.entity("gm").name == "The Gambia"  # ids are ISO codes ...
    assert shipped_world.entity_by_fips("gm").name == "Germany"  # ... FIPS differ


def test_questions_count_types_and_records(shipped_world):
    questions = shipped_world.questions
    assert len(questions) >= 1500
    types = {q.extra["qtype"] for q in questions}
    assert len(types) >= 8
    assert {"flag", "capital", "currency", "internet_code", "independence"} <= types
    assert "official_language" in types
    assert len({q.id for q in questions}) == len(questions)
    for q in questions:
        check_sample(q)
        assert q.split in SPLITS
        assert q.tools == ("image" if q.extra["qtype"] == "flag" else "both")
        assert q.source == f"world/{q.extra['qtype']}"
        assert len(q.answer) <= 60, q.id  # short answers that exact match can judge
    france = {q.extra["qtype"]: q for q in questions if q.extra["entity"] == "fr"}
    assert france["flag"].answer == "France"
    assert france["capital"].answer == "Paris"
    assert france["internet_code"].answer == ".fr"
    assert france["currency"].answer == "euro"


def test_splits_are_entity_disjoint(shipped_world):
    splits_of_entity = defaultdict(set)
    for q in shipped_world.questions:
        splits_of_entity[q.extra["entity"]].add(q.split)
    for entity_id, splits in splits_of_entity.items():
        assert splits == {shipped_world.entity(entity_id).split}
    by_split = defaultdict(set)
    for entity in shipped_world.entities:
        by_split[entity.split].add(entity.id)
    assert not by_split["train"] & by_split["test"]
    assert not by_split["train"] & by_split["val"]
    n = len(shipped_world.entities)
    assert 0.6 * n <= len(by_split["train"]) <= 0.8 * n
    assert len(by_split["test"]) >= 0.15 * n


def test_familiar_is_about_half_and_in_every_split(shipped_world):
    entities = shipped_world.entities
    familiar = [e for e in entities if e.familiar]
    assert 0.4 <= len(familiar) / len(entities) <= 0.6
    # The rule: the more populous half.
    assert min(e.population for e in familiar) >= max(
        e.population for e in entities if not e.familiar
    )
    for split in SPLITS:
        kinds = {e.familiar for e in entities if e.split == split}
        assert kinds == {True, False}, split
        tags = {t for q in shipped_world.questions_in(split) for t in q.tags}
        assert {"familiar", "unfamiliar"} <= tags


def test_lookalike_flags_ask_one_member(shipped_world):
    asked = {q.extra["entity"] for q in shipped_world.questions}
    for group in KNOWN_LOOKALIKES:
        members = [e for e in shipped_world.entities if e.iso2 in group]
        assert len(members) >= 2
        assert sum(e.id in asked for e in members) == 1, group
    gaza, west_bank = shipped_world.entity("ps-gz"), shipped_world.entity("ps-we")
    assert gaza.flag == west_bank.flag
    assert (gaza.id in asked) != (west_bank.id in asked)


def test_question_images_are_degraded_photos(shipped_world):
    flags = {}
    for q in shipped_world.questions:
        (image,) = q.images
        with Image.open(image.path) as photo:
            assert photo.format == "JPEG"
            assert max(photo.size) <= 192
            photo_px = np.asarray(photo.convert("RGB").resize((32, 32)), dtype=np.float32)
        entity = shipped_world.entity(q.extra["entity"])
        if entity.id not in flags:
            with Image.open(shipped_world.flag_path(entity.id)) as flag:
                rgba = flag.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                white.alpha_composite(rgba)
                flags[entity.id] = np.asarray(
                    white.convert("RGB").resize((32, 32)), dtype=np.float32
                )
        difference = np.abs(photo_px - flags[entity.id]).mean() / 255
        assert difference > 0.03, q.id


def test_no_html_left_in_pages_or_answers(shipped_world):
    for page in shipped_world.pages:
        assert not _has_html(page.text), page.id
        assert not _has_html(page.title), page.id
    for q in shipped_world.questions:
        for text in [q.question, q.answer, *q.aliases]:
            assert not _has_html(text), (q.id, text)
            assert "<" not in text and ">" not in text, (q.id, text)
    assert any("Brasília" in p.text for p in shipped_world.pages_of("br"))


def test_pages_are_web_like(shipped_world):
    assert len({p.url for p in shipped_world.pages}) == len(shipped_world.pages)
    for entity in shipped_world.entities:
        pages = shipped_world.pages_of(entity.id)
        assert len(pages) >= 2, entity.id
        main = pages[0]
        assert main.url == f"world://factbook/{entity.fips}/overview"
        assert main.thumbnail == entity.flag
        assert all(p.thumbnail is None for p in pages[1:])
        for page in pages:
            assert re.fullmatch(rf"world://factbook/{entity.fips}/[a-z-]+", page.url)
            assert page.title.startswith(f"{entity.name} \u2014 ")
            assert 100 < len(page.text) < 20_000, page.id
    government = shipped_world.page("world://factbook/fr/government")
    assert government.title == "France \u2014 Government"
    assert "Paris" in government.text


def test_world_info_contract(shipped_world):
    info = world_info()
    assert info["entities"]["with_flags"] >= 220
    assert info["entities"]["familiar"] + info["entities"]["unfamiliar"] == len(
        shipped_world.entities
    )
    assert info["questions"]["total"] == len(shipped_world.questions) >= 1500
    assert info["questions"]["types"] >= 8
    assert sum(info["questions"]["by_type"].values()) == info["questions"]["total"]
    assert sum(info["questions"]["by_split"].values()) == info["questions"]["total"]
    assert set(info["questions"]["by_split"]) == set(SPLITS)
    assert info["pages"]["total"] == len(shipped_world.pages)
    assert info["assets_bytes"] < 15_000_000


def test_cli_world_info_json():
    result = CliRunner().invoke(app, ["world", "info", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["entities"]["with_flags"] >= 220
    assert info["questions"]["total"] >= 1500
