"""Plain greedy chat generation with a policy (no tools): one prompt, optional images;
`generate_batch` for many images at once."""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from mmsr.models.policy import Policy

ImageLike = Path | str | bytes | Image.Image


@dataclass
class Generation:
    text: str  # the decoded reply, special tokens removed
    n_new_tokens: int  # tokens generated, the stop token included
    seconds: float  # wall time of `model.generate`


def open_image(image: ImageLike) -> Image.Image:
    """An RGB PIL image from a path, encoded bytes or a PIL image; errors name the input."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, bytes):
        try:
            return Image.open(io.BytesIO(image)).convert("RGB")
        except OSError as err:
            raise ValueError(f"image bytes ({len(image)} B) are not a readable image") from err
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with Image.open(path) as opened:
            return opened.convert("RGB")
    except OSError as err:
        raise ValueError(f"image {path} is not a readable image: {err}") from err


def stop_token_ids(policy: Policy) -> list[int]:
    """`<|im_end|>` plus whatever the checkpoint's generation config calls end-of-sequence."""
    ids = [policy.tokenizer.convert_tokens_to_ids("<|im_end|>")]
    configured = policy.model.generation_config.eos_token_id
    configured = configured if isinstance(configured, list) else [configured]
    vocab = policy.model.get_input_embeddings().num_embeddings
    return list(dict.fromkeys(i for i in ids + configured if i is not None and 0 <= i < vocab))


def generate_reply(
    policy: Policy,
    messages: list[dict],
    images: Sequence[ImageLike] = (),
    max_new_tokens: int = 48,
) -> Generation:
    """Greedy reply to chat `messages` whose image parts are filled, in order, by `images`."""
    text = policy.processor.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    pil_images = [open_image(image) for image in images] or None
    inputs = policy.processor(text=[text], images=pil_images, return_tensors="pt")
    inputs = inputs.to(policy.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(policy.dtype)
    stop = stop_token_ids(policy)
    pad = policy.tokenizer.pad_token_id
    start = time.perf_counter()
    with torch.inference_mode():
        output = policy.model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stop,
            pad_token_id=stop[0] if pad is None else pad,
        )
    seconds = time.perf_counter() - start
    new_tokens = output[0, inputs["input_ids"].shape[1] :]
    reply = policy.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
    return Generation(text=reply, n_new_tokens=int(new_tokens.numel()), seconds=seconds)


def user_message(prompt: str, n_images: int = 0) -> dict:
    """One user turn: the images first (as Qwen-VL is trained), then the text."""
    parts = [{"type": "image"} for _ in range(n_images)]
    return {"role": "user", "content": [*parts, {"type": "text", "text": prompt}]}


def chat_once(
    policy: Policy,
    prompt: str,
    image: ImageLike | None = None,
    max_new_tokens: int = 48,
) -> str:
    """Greedy answer to one user `prompt` (optionally about one image); stops at <|im_end|>."""
    images = [] if image is None else [image]
    message = user_message(prompt, n_images=len(images))
    return generate_reply(policy, [message], images, max_new_tokens=max_new_tokens).text


def generate_batch(
    policy: Policy,
    images: Sequence[Image.Image],
    prompt: str | Sequence[str],
    max_new_tokens: int = 16,
    prefix: str | Sequence[str] = "",
) -> list[str]:
    """Greedy replies about each image (one user turn each: the image, then `prompt`, one
    for all or one per image), left-padded; each reply continues its `prefix` (the start of
    the assistant turn, not returned) and is stripped."""
    n = len(images)
    prompts = [prompt] * n if isinstance(prompt, str) else list(prompt)
    prefixes = [prefix] * n if isinstance(prefix, str) else list(prefix)
    if not len(prompts) == len(prefixes) == n:
        raise ValueError(f"{n} images but {len(prompts)} prompts and {len(prefixes)} prefixes")
    processor = policy.processor
    texts = [
        processor.apply_chat_template(
            [user_message(p, n_images=1)], tokenize=False, add_generation_prompt=True
        )
        + start
        for p, start in zip(prompts, prefixes, strict=True)
    ]
    tokenizer = processor.tokenizer
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        inputs = processor(text=texts, images=list(images), return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = side
    inputs = inputs.to(policy.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(policy.dtype)
    stop = stop_token_ids(policy)
    with torch.inference_mode():
        output = policy.model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stop,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0],
        )
    new = output[:, inputs["input_ids"].shape[1] :]
    return [r.strip() for r in tokenizer.batch_decode(new, skip_special_tokens=True)]
