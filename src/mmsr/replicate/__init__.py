"""The nano replication of MMSearch-R1's findings (`bench/replicate_nano.py`, issue 6).

eye -> balanced train/test (FVQA method, nano as the preliminary model) -> SFT warm-start
-> GRPO on balanced train -> evaluation on balanced test in direct / RAG / on-demand mode,
with the ablations (no search penalty, unbalanced data, SFT only), then results.md,
results.json and plots with every target's verdict computed from the numbers.

- `config`: `ReplicateConfig`, the sizes and why they fit ~2 h on 2 CPU cores;
- `run`: the resumable stages (`mmsr.stages`) and their dependencies;
- `results`: the targets and the results files; `plots`: the PNGs.
"""

from mmsr.replicate.config import QUICK, ReplicateConfig
from mmsr.replicate.run import clear_stages, run_replication

__all__ = ["QUICK", "ReplicateConfig", "clear_stages", "run_replication"]
