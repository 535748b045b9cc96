"""The nano policy: SmolLM2's exact text computation inside Qwen2.5-VL, images, the cache."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from mmsr.models.generate import chat_once, generate_reply, user_message
from mmsr.models.nano import load_nano, nano_cache_folder

pytestmark = pytest.mark.slow

SMOLLM2_VOCAB = 49152
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    return",
    "<|im_start|>user\nName three primary colours.<|im_end|>\n<|im_start|>assistant\n",
]


def _flag(colors: list[tuple[int, int, int]], size: int = 112) -> Image.Image:
    """A striped test image (vertical bands)."""
    image = Image.new("RGB", (size, size))
    band = size // len(colors)
    for i, color in enumerate(colors):
        image.paste(color, (i * band, 0, size if i == len(colors) - 1 else (i + 1) * band, size))
    return image


def _text_logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=input_ids).logits[..., :SMOLLM2_VOCAB]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_text_logits_equal_smollm2(nano_policy, smollm2_reference, prompt):
    input_ids = nano_policy.tokenizer(prompt, return_tensors="pt").input_ids
    assert input_ids.max() < SMOLLM2_VOCAB  # text never produces the added vision tokens
    reference = _text_logits(smollm2_reference, input_ids)
    nano = _text_logits(nano_policy.model, input_ids)
    assert reference.shape == nano.shape
    assert (reference - nano).abs().max().item() <= 1e-4


def test_tokenizer_extends_smollm2(nano_policy):
    from mmsr.models.smollm2 import load_smollm2_tokenizer

    smollm2 = load_smollm2_tokenizer()
    nano = nano_policy.tokenizer
    text = "Bonjour! <|im_start|>user\nWhat's 2+2?<|im_end|> Ünïcödé ✓"
    assert nano(text).input_ids == smollm2(text).input_ids
    assert len(nano) == SMOLLM2_VOCAB + 4
    added = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    assert nano.convert_tokens_to_ids(added) == list(range(SMOLLM2_VOCAB, SMOLLM2_VOCAB + 4))


def test_config_and_weights_follow_the_recipe(nano_policy):
    model, tok = nano_policy.model, nano_policy.tokenizer
    config = model.config
    assert config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert config.vision_end_token_id == tok.convert_tokens_to_ids("<|vision_end|>")
    assert config.text_config.rope_parameters["mrope_section"] == [8, 12, 12]
    assert config.text_config.rope_parameters["rope_theta"] == 1e5
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert model.generation_config.pad_token_id == tok.pad_token_id
    language_model = model.model.language_model
    assert model.lm_head.weight.data_ptr() == language_model.embed_tokens.weight.data_ptr()
    for layer in language_model.layers:
        attn = layer.self_attn
        for bias in (attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias):
            assert torch.count_nonzero(bias) == 0
    embeddings = language_model.embed_tokens.weight
    mean_row = embeddings[:SMOLLM2_VOCAB].mean(dim=0)
    torch.testing.assert_close(embeddings[SMOLLM2_VOCAB:], mean_row.expand(4, -1))
    n_vision = sum(p.numel() for p in model.model.visual.parameters())
    assert 3_000_000 < n_vision < 5_000_000


def test_answers_capital_of_france(nano_policy):
    assert type(nano_policy.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    answer = chat_once(nano_policy, "What is the capital of France?")
    assert "Paris" in answer


def test_image_forward_uses_16_tokens_and_the_pixels(nano_policy):
    processor, model = nano_policy.processor, nano_policy.model
    text = processor.apply_chat_template(
        [user_message("Which country's flag is this?", n_images=1)],
        tokenize=False,
        add_generation_prompt=True,
    )
    logits = []
    for colors in ([(0, 85, 164), (255, 255, 255), (239, 65, 53)], [(0, 0, 0), (255, 206, 0)]):
        inputs = processor(text=[text], images=[_flag(colors)], return_tensors="pt")
        assert (inputs["input_ids"] == model.config.image_token_id).sum().item() == 16
        assert tuple(inputs["pixel_values"].shape) == (64, 3 * 2 * 14 * 14)
        assert inputs["image_grid_thw"].tolist() == [[1, 8, 8]]
        with torch.no_grad():
            logits.append(model(**inputs).logits[0, -1])
    assert torch.isfinite(logits[0]).all()
    # Different pictures must reach the language model (the vision tower is wired in).
    assert (logits[0] - logits[1]).abs().max().item() > 1e-3


def test_generate_with_two_images(nano_policy):
    images = [_flag([(255, 0, 0), (255, 255, 255)]), _flag([(0, 128, 0), (255, 255, 0)], 200)]
    message = user_message("Are these two flags the same?", n_images=2)
    text = nano_policy.processor.apply_chat_template(
        [message], tokenize=False, add_generation_prompt=True
    )
    inputs = nano_policy.processor(text=[text], images=images, return_tensors="pt")
    n_image_tokens = (inputs["input_ids"] == nano_policy.model.config.image_token_id).sum()
    assert n_image_tokens.item() == 32  # a square image of any size costs 16 tokens
    reply = generate_reply(nano_policy, [message], images, max_new_tokens=12)
    assert 1 <= reply.n_new_tokens <= 12
    assert isinstance(reply.text, str)


def test_cache_round_trip_gives_identical_logits(nano_policy, mmsr_cache_root):
    folder = nano_cache_folder(mmsr_cache_root)
    assert (folder / "model.safetensors").is_file()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".tmp-")]
    reloaded, processor = load_nano(cache=mmsr_cache_root)  # no SmolLM2 given: must hit cache
    assert reloaded is not nano_policy.model
    message = user_message("Which country's flag is this?", n_images=1)
    text = processor.apply_chat_template([message], tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=[_flag([(0, 0, 255), (255, 0, 0)])], return_tensors="pt")
    with torch.no_grad():
        expected = nano_policy.model(**inputs).logits
        actual = reloaded(**inputs).logits
    assert torch.equal(expected, actual)
