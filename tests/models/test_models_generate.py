"""`generate_batch`: many images at once, each with its own prompt and reply prefix."""

from __future__ import annotations

import pytest
from PIL import Image

from mmsr.models.generate import generate_batch


def test_a_prompt_or_prefix_per_image_is_checked_before_generating():
    images = [Image.new("RGB", (32, 32))] * 2
    with pytest.raises(ValueError, match="2 images but 3 prompts and 2 prefixes"):
        generate_batch(None, images, ["a", "b", "c"])


def test_each_reply_continues_its_own_prefix(tiny_policy):
    images = [Image.new("RGB", (56, 56), colour) for colour in ("red", "blue")]
    alone = generate_batch(tiny_policy, images[:1], "Which flag?", 4, "<reason>")
    both = generate_batch(tiny_policy, images, ["Which flag?", "Name it."], 4, ["<reason>", ""])
    assert len(both) == 2 and all(isinstance(reply, str) for reply in both)
    assert both[0] == alone[0]  # left padding does not change a greedy reply
