"""What the training-step benchmarks share: the options naming a policy, its questions and
the rollouts, and loading them (with the local search tools)."""

from __future__ import annotations

import argparse

import torch

from mmsr.eval.samples import load_eval_samples
from mmsr.models.loading import load_policy
from mmsr.search.config import SearchConfig
from mmsr.search.tools import make_tools


def add_rollout_options(parser: argparse.ArgumentParser, repeats: int) -> None:
    parser.add_argument("--model", default="nano", help='"nano" or a checkpoint folder')
    parser.add_argument("--data", default="world:train", help="world:<split> or FVQA parquet")
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--n", type=int, default=4, help="rollouts per question")
    parser.add_argument("--freeze-layers", type=int, default=22)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")


def load_rollout_inputs(args: argparse.Namespace):
    """(policy on the CPU, the local search tools, the first `--questions` samples)."""
    if args.repeats < 1 or args.freeze_layers < 1:
        raise SystemExit("--repeats and --freeze-layers must be >= 1")
    policy = load_policy(args.model, device="cpu")
    tools = make_tools(SearchConfig(cache=False))
    if args.threads:  # after the tools: building a search index wants every core
        torch.set_num_threads(args.threads)
    return policy, tools, load_eval_samples(args.data)[: args.questions]
