"""The nano policy's chat template: ChatML with Qwen2-VL's vision placeholders.

SmolLM2 was tuned on ChatML (`<|im_start|>role\\n...<|im_end|>\\n`), the same markers
Qwen2.5-VL uses, so the text layout is unchanged and the language model sees exactly the
format it was trained on. An image inside a message renders as
`<|vision_start|><|image_pad|><|vision_end|>`; the processor then repeats `<|image_pad|>` once
per merged vision token (16 for a 112 px image).

Message content is either a string or a list of parts in the transformers / Qwen style:
`{"type": "text", "text": ...}`, `{"type": "image"}` (or a part with an `image` /
`image_url` key), `{"type": "video"}`.
"""

from __future__ import annotations

# Used when the conversation has no system message. SmolLM2's own template injects this
# sentence too; keeping it keeps the model on its training distribution.
DEFAULT_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"

# Written with explicit `{{ '\n' }}` and `-` trims everywhere so the rendered whitespace is
# exactly ChatML's, whatever the indentation here.
NANO_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}"
    "{{ message['content'] }}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}"
    "{{ '" + VISION_START + IMAGE_PAD + VISION_END + "' }}"
    "{%- elif part['type'] == 'video' or 'video' in part -%}"
    "{{ '" + VISION_START + VIDEO_PAD + VISION_END + "' }}"
    "{%- elif 'text' in part -%}"
    "{{ part['text'] }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{%- endif -%}"
)
