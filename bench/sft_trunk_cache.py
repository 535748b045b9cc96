"""SFT step time with the frozen layers run every time vs replayed from the trunk cache.

    python bench/sft_trunk_cache.py --model runs/replicate-s80/sft/final \
        --data runs/replicate-s80/balance-train/balanced.parquet --threads 2

One rollout (questions x n with the local search tools) gives trajectories of the shapes
SFT trains on (search turns with result thumbnails, answers). Then the same SFT step,
from the same weights, alternating: the full forward (`trunk_cache` off, what every step
cost before), and the replay from a cache filled by one earlier pass (what SFT's 2nd and
later epochs cost now). Prints each step's time and loss (the losses must agree) and the
median ratio.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import torch

from mmsr.eval.samples import load_eval_samples
from mmsr.models.loading import load_policy
from mmsr.rollout.engine import EngineConfig, RolloutEngine
from mmsr.search.config import SearchConfig
from mmsr.search.tools import make_tools
from mmsr.train.config import ModelOptions, OptimOptions, SFTConfig
from mmsr.train.lora import prepare_trainable
from mmsr.train.optim import build_optimizer, build_scheduler
from mmsr.train.sft import sft_step
from mmsr.train.shared_trunk import TrunkCache

warnings.filterwarnings("ignore", message="Palette images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="nano", help='"nano" or a checkpoint folder')
    parser.add_argument("--data", default="world:train", help="world:<split> or FVQA parquet")
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--n", type=int, default=2, help="rollouts per question")
    parser.add_argument("--freeze-layers", type=int, default=22)
    parser.add_argument("--matmul-dtype", default="bf16", choices=("bf16", "fp32"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.repeats < 1 or args.freeze_layers < 1:
        raise SystemExit("--repeats and --freeze-layers must be >= 1")

    policy = load_policy(args.model, device="cpu")
    tools = make_tools(SearchConfig(cache=False))
    if args.threads:  # after the tools: building a search index wants every core
        torch.set_num_threads(args.threads)
    samples = load_eval_samples(args.data)[: args.questions]
    config = EngineConfig(max_new_tokens=96, batch_size=16, temperature=0.7)
    trajectories = RolloutEngine(policy, tools, config).rollout(samples, n=args.n, seed=1)
    keys = list(range(len(trajectories)))
    print(f"trajectory lengths {sorted(t.length for t in trajectories)}")

    options = ModelOptions(freeze_layers=args.freeze_layers, matmul_dtype=args.matmul_dtype)
    model = prepare_trainable(policy.model, options)
    weights = copy.deepcopy(model.state_dict())
    sft = SFTConfig(batch_size=len(trajectories), model=options)
    pad_id = policy.tokenizer.convert_tokens_to_ids("<|im_end|>")
    trunk = TrunkCache(model, args.freeze_layers)

    def step(cache: TrunkCache | None) -> tuple[float, float]:
        model.load_state_dict(weights)
        optimizer = build_optimizer(model, OptimOptions(lr=1e-4))
        scheduler = build_scheduler(optimizer, OptimOptions(lr=1e-4), 10)
        began = time.perf_counter()
        loss = sft_step(model, trajectories, optimizer, scheduler, sft, pad_id, None,
                        cache, keys if cache else None)["loss"]  # fmt: skip
        return time.perf_counter() - began, loss

    first, _ = step(trunk)  # the first epoch: full forwards that also fill the cache
    print(f"filling the cache: {first:.1f} s")
    seconds: dict[str, list[float]] = {"full": [], "replayed": []}
    for repeat in range(args.repeats):
        for name, cache in (("full", None), ("replayed", trunk)):
            took, loss = step(cache)
            seconds[name].append(took)
            print(f"[{repeat + 1}/{args.repeats}] {name}: {took:.1f} s, loss {loss:.6f}",
                  flush=True)  # fmt: skip
    full, replayed = (statistics.median(seconds[k]) for k in ("full", "replayed"))
    print(f"median SFT step: full {full:.1f} s, replayed {replayed:.1f} s: "
          f"{full / replayed:.2f}x faster")  # fmt: skip


if __name__ == "__main__":
    main()
