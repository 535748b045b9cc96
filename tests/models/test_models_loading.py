"""load_policy on local checkpoints (a tiny random Qwen2.5-VL), errors, devices, dtypes."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from mmsr.models.generate import chat_once, generate_reply, open_image, user_message
from mmsr.models.loading import load_policy
from mmsr.models.policy import resolve_device, resolve_dtype


def test_load_policy_reads_a_local_checkpoint(tiny_qwen_vl_dir, tiny_policy):
    from transformers import Qwen2_5_VLForConditionalGeneration

    assert tiny_policy.name == str(tiny_qwen_vl_dir)
    assert type(tiny_policy.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert tiny_policy.device == torch.device("cpu")
    assert tiny_policy.dtype == torch.float32
    assert not tiny_policy.model.training
    assert "<|vision_start|>" in tiny_policy.processor.chat_template
    # The weights are the saved ones: same logits as loading the class directly.
    direct = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_qwen_vl_dir).eval()
    input_ids = tiny_policy.tokenizer("hello world", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(tiny_policy.model(input_ids).logits, direct(input_ids).logits)


def test_generate_with_and_without_images(tiny_policy):
    assert isinstance(chat_once(tiny_policy, "Say hi.", max_new_tokens=4), str)
    image = Image.new("RGB", (90, 60), (200, 30, 30))
    reply = generate_reply(
        tiny_policy,
        [user_message("Which flags?", n_images=2)],
        [image, Image.new("RGB", (40, 40), (0, 0, 255))],
        max_new_tokens=5,
    )
    assert 1 <= reply.n_new_tokens <= 5


def test_image_tokens_follow_the_image_processor(tiny_policy):
    processor = tiny_policy.processor
    text = processor.apply_chat_template(
        [user_message("What is this?", n_images=1)], tokenize=False, add_generation_prompt=True
    )
    inputs = processor(text=[text], images=[Image.new("RGB", (56, 56))], return_tensors="pt")
    image_token_id = tiny_policy.model.config.image_token_id
    assert (inputs["input_ids"] == image_token_id).sum().item() == 4  # 56 px: 4x4 patches / 2x2
    assert (inputs["mm_token_type_ids"] == 1).sum().item() == 4


def test_chat_template_renders_chatml_with_vision_tokens(tiny_policy):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Whose flag?"}]},
        {"role": "assistant", "content": "France."},
        {"role": "user", "content": "Capital?"},
    ]
    text = tiny_policy.processor.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Whose flag?<|im_end|>\n"
        "<|im_start|>assistant\nFrance.<|im_end|>\n"
        "<|im_start|>user\nCapital?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    without_system = tiny_policy.processor.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False
    )
    assert without_system.startswith("<|im_start|>system\nYou are a helpful AI assistant")
    assert without_system.endswith("<|im_start|>user\nHi<|im_end|>\n")


def test_missing_path_is_named(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        load_policy(missing, device="cpu")


def test_folder_without_config_is_named(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=f"{tmp_path}.*no config.json"):
        load_policy(tmp_path, device="cpu")
    with pytest.raises(ValueError, match="weights.bin"):
        load_policy(tmp_path / "weights.bin", device="cpu")


def test_unsupported_model_type_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match=r"model_type 'llama' is not a supported"):
        load_policy(tmp_path, device="cpu")


def test_device_and_dtype_defaults():
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype(None, torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert resolve_dtype(torch.float16, torch.device("cpu")) == torch.float16
    with pytest.raises(ValueError, match="'int3'"):
        resolve_dtype("int3", torch.device("cpu"))
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected
    with pytest.raises(ValueError, match="'gpu0'"):
        resolve_device("gpu0")


def test_load_policy_honours_dtype(tiny_qwen_vl_dir):
    policy = load_policy(tiny_qwen_vl_dir, device="cpu", dtype="bfloat16")
    assert policy.dtype == torch.bfloat16
    reply = generate_reply(
        policy, [user_message("x", n_images=1)], [Image.new("RGB", (56, 56))], max_new_tokens=2
    )
    assert reply.n_new_tokens >= 1


def test_open_image_names_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        open_image(tmp_path / "nope.png")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png"):
        open_image(broken)
    with pytest.raises(ValueError, match="12 B"):
        open_image(b"not an image")
    assert open_image(Image.new("L", (5, 5))).mode == "RGB"
