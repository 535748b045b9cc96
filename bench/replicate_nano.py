"""The nano replication of MMSearch-R1's findings (issue 6): eye, search-balanced train /
test sets, SFT, GRPO, ablations, evaluation in three modes, results.md with every target's
verdict and plots. Resumable: rerun the same command to continue; a changed option redoes
only the stages that depend on it.

    python bench/replicate_nano.py --threads 2           # 1 h 44 min on 2 CPU cores
    python bench/replicate_nano.py --quick --out runs/replicate-quick   # every stage, minutes
    python bench/replicate_nano.py --grpo-steps 32 --device cuda        # a GPU: minutes
    python bench/replicate_nano.py --out runs/replicate-nano --heldout val  # targets on val

The logic lives in `mmsr.replicate`; every option is a `ReplicateConfig` field.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

from mmsr.replicate import QUICK, ReplicateConfig, run_replication
from mmsr.replicate.config import field_docs
from mmsr.replicate.heldout import check_heldout


def parse_args(argv: list[str] | None = None) -> tuple[ReplicateConfig, int, str | None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    docs = field_docs(ReplicateConfig)
    hints = typing.get_type_hints(ReplicateConfig)
    for field in dataclasses.fields(ReplicateConfig):
        option = "--" + field.name.replace("_", "-")
        kind = hints[field.name]
        # argparse expands %-formats in help: a literal "%" in a docstring must be doubled.
        text = f"{docs.get(field.name, '')} (default {field.default})".replace("%", "%%")
        if kind is bool:  # --align / --no-align
            parser.add_argument(
                option, action=argparse.BooleanOptionalAction, default=None, help=text
            )
            continue
        convert = next(t for t in (int, float, str) if t == kind or t in typing.get_args(kind))
        parser.add_argument(option, type=convert, default=None, help=text)
    parser.add_argument(
        "--quick", action="store_true", help=f"tiny sizes that run every stage in minutes: {QUICK}"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument(
        "--heldout",
        metavar="SPLIT",
        help="instead of replicating: check the finished run in --out on world:SPLIT (val), "
        "with the run's own options (mmsr.replicate.heldout): heldout-SPLIT.md",
    )
    args = vars(parser.parse_args(argv))
    quick, threads, heldout = args.pop("quick"), args.pop("threads"), args.pop("heldout")
    values = {**(QUICK if quick else {}), **{k: v for k, v in args.items() if v is not None}}
    return ReplicateConfig(**values), threads, heldout


def main(argv: list[str] | None = None) -> int:
    try:
        config, threads, heldout = parse_args(argv)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    try:
        if heldout:
            check_heldout(config.out, heldout)
        else:
            run_replication(config)
    except (FileNotFoundError, ValueError) as err:  # bad options or files: no traceback
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
