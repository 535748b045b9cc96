"""Generated tokens/s of the rollout engine vs two baselines, on one workload, in one run.

    python bench/engine_throughput.py --samples 4 --n 4 --threads 2 --repeats 2

Designs compared (same policy, prompts, tools, limits and per-turn token schedule):
- engine: `RolloutEngine` (batched KV-cached decoding; a row leaves the batch when its
  turn ends; tool calls run concurrently and a trajectory rejoins as soon as its results
  are in; observations are prefilled on top of the cached conversation).
- per-trajectory: one trajectory at a time; each turn is an HF `generate` call over the
  whole conversation so far; tool calls one after another.
- round-synchronous (the official MMSearch-R1 design): each round, one batched HF
  `generate` over every active trajectory (left-padded, whole conversation); then the
  round's tool calls one after another; then the next round.

Every tool call first sleeps `--latency-ms` (asyncio), standing in for a web search.

Workload. The untrained nano policy rarely writes valid tags, so all designs follow the same
steering schedule (a token forcer / logits processor): turn 1 is "<reason>" + R free tokens
+ "</reason>\\n<search><img></search>", turn 2 "<reason>" + R free + "</reason>\\n
<text_search>" + 8 free + "</text_search>", turn 3 "<reason>" + R free + "</reason>\\n<answer>"
+ 6 free + "</answer>", each closed by <|im_end|>. R varies per trajectory (default 24..120),
as real reasoning lengths do; free tokens are sampled at temperature 1 but never end the turn. So
every design generates the same number of tokens; tokens/s compares wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import warnings
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from mmsr.models.loading import load_policy
from mmsr.rollout.engine import FREE_NO_STOP, EngineConfig, RolloutEngine, _Search
from mmsr.search.tools import SearchTools
from mmsr.world.load import load_world

warnings.filterwarnings("ignore", message="Palette images")


# ------------------------------------------------------------------ tools
class _SlowTool:
    """A tool whose every call first sleeps (asyncio) for the simulated latency."""

    def __init__(self, tool, seconds: float):
        self.tool, self.seconds = tool, seconds

    async def asearch(self, *args, **kwargs):
        await asyncio.sleep(self.seconds)
        return await self.tool.asearch(*args, **kwargs)


@dataclass
class SlowTools:
    image: _SlowTool
    text: _SlowTool


class _WorldBackend:
    """Fallback search over the world's pages while the local backends are not installed:
    image search returns the first k flag pages, text search the first k pages."""

    def __init__(self, name: str, thumbnails: bool):
        self.name = name
        self.pages = [p for p in load_world().pages if p.thumbnail or not thumbnails]

    def search(self, _query, k: int):
        from mmsr.search.types import SearchResult

        return [
            SearchResult(p.title, p.url, snippet=p.text[:400], thumbnail=p.thumbnail or "")
            for p in self.pages[:k]
        ]


def make_bench_tools(latency_s: float, search: str = "config") -> tuple[SlowTools, str]:
    """`search="config"`: the configured tools (local backends by default; their indexes
    are built, and cached, on first use); "world": the world-page fallback."""
    try:
        if search == "world":
            raise ImportError("world-page backend asked for")
        from mmsr.search.config import SearchConfig
        from mmsr.search.tools import make_tools

        tools: SearchTools = make_tools(SearchConfig(cache=False))
        label = "local backends (make_tools)"
    except (ImportError, RuntimeError):
        from mmsr.search.tools import ImageSearchTool, TextSearchTool

        image = ImageSearchTool(_WorldBackend("world-image", True), cache=None, k=5)
        text = TextSearchTool(_WorldBackend("world-text", False), cache=None, k=5)
        tools = SearchTools(image, text, None, None, None)  # type: ignore[arg-type]
        label = "world-page backend (first k pages, same for every design)"
    return SlowTools(_SlowTool(tools.image, latency_s), _SlowTool(tools.text, latency_s)), label


# ------------------------------------------------------------------ the steering schedule
class Schedule:
    """forcer(group, index, turn, step) -> token | FREE_NO_STOP | None (see module doc)."""

    def __init__(self, tokenizer, n: int, reason_min: int = 8, reason_max: int = 56):
        encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
        self.n, self.reason_min, self.reason_max = n, reason_min, reason_max
        self.open = encode("<reason>")
        self.im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.tails = {
            1: [(encode("</reason>\n<search><img></search>"), 0)],
            2: [(encode("</reason>\n<text_search>"), 8), (encode("</text_search>"), 0)],
            3: [(encode("</reason>\n<answer>"), 6), (encode("</answer>"), 0)],
        }

    def reasoning_tokens(self, group: int, index: int) -> int:
        span = self.reason_max - self.reason_min + 1
        return self.reason_min + (group * self.n * 13 + index * 29) % span

    def __call__(self, group: int, index: int, turn: int, step: int):
        plan: list[tuple[list[int], int]] = [(self.open, self.reasoning_tokens(group, index))]
        plan += self.tails.get(turn, self.tails[3])
        for forced, free in plan:
            if step < len(forced):
                return forced[step]
            step -= len(forced)
            if step < free:
                return FREE_NO_STOP
            step -= free
        return self.im_end if step == 0 else None


class ScheduleProcessor(LogitsProcessor):
    """The schedule as an HF logits processor, for rows (group, index) at a turn."""

    def __init__(self, schedule, rows, turn, prompt_length, stops, banned):
        self.schedule, self.rows, self.turn = schedule, rows, turn
        self.prompt_length, self.stops, self.banned = prompt_length, stops, banned

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_length
        scores[:, self.banned] = -float("inf")
        for row, (group, index) in enumerate(self.rows):
            action = self.schedule(group, index, self.turn, step)
            if action is None:
                continue
            if action == FREE_NO_STOP:
                scores[row, self.stops] = -float("inf")
            else:
                scores[row] = -float("inf")
                scores[row, action] = 0.0
        return scores


# ------------------------------------------------------------------ baselines
def _generate_turn(engine: RolloutEngine, schedule, conversations, max_new_tokens: int) -> int:
    """One HF `generate` over `conversations` (left-padded, whole context); appends each
    row's turn and returns the number of tokens kept."""
    tokenizer, model = engine.tokenizer, engine.model
    width = max(len(c.ids) for c in conversations)
    size = len(conversations)
    input_ids = torch.full((size, width), engine.pad_id, dtype=torch.long)
    attention = torch.zeros((size, width), dtype=torch.long)
    for row, conversation in enumerate(conversations):
        input_ids[row, width - len(conversation.ids) :] = torch.tensor(conversation.ids)
        attention[row, width - len(conversation.ids) :] = 1
    pixels = torch.cat([chunk for c in conversations for chunk in c.pixel_chunks])
    grids = torch.cat([grid for c in conversations for grid in c.grids])
    stops = sorted(engine.stops)
    processor = ScheduleProcessor(
        schedule,
        [(c.group, c.sample_index) for c in conversations],
        conversations[0].turn,
        width,
        stops,
        engine.banned,
    )
    with torch.inference_mode():
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            pixel_values=pixels.to(engine.policy.dtype),
            image_grid_thw=grids,
            mm_token_type_ids=(input_ids == engine.image_token_id).int(),
            max_new_tokens=max_new_tokens,
            do_sample=True,
            temperature=engine.config.temperature,
            top_k=0,
            top_p=1.0,
            logits_processor=LogitsProcessorList([processor]),
            eos_token_id=stops,
            pad_token_id=tokenizer.pad_token_id,
        )
    kept = 0
    for row, conversation in enumerate(conversations):
        tokens = output[row, width:].tolist()
        for cut, token in enumerate(tokens):
            if token in engine.stops:
                tokens = tokens[: cut + 1]
                break
        conversation.ids += tokens
        conversation.mask += [1] * len(tokens)
        conversation.logp += [0.0] * len(tokens)
        conversation.turn_tokens = tokens
        engine._extend_text_positions(conversation, len(tokens))
        kept += len(tokens)
    return kept


def per_trajectory(engine: RolloutEngine, schedule, samples, n: int) -> int:
    generated = 0
    for group, sample in enumerate(samples):
        for index in range(n):
            conversation = engine._start(sample, group, index, engine.config.seed)
            while not conversation.done:
                generated += _generate_turn(
                    engine, schedule, [conversation], engine.config.max_new_tokens
                )
                outcome = engine._end_turn(conversation)
                if isinstance(outcome, _Search):
                    asyncio.run(engine._search(outcome))
    return generated


def round_synchronous(engine: RolloutEngine, schedule, samples, n: int) -> int:
    conversations = [
        engine._start(sample, group, index, engine.config.seed)
        for group, sample in enumerate(samples)
        for index in range(n)
    ]
    generated = 0
    while active := [c for c in conversations if not c.done]:
        generated += _generate_turn(engine, schedule, active, engine.config.max_new_tokens)
        searches = [engine._end_turn(c) for c in active]
        for search in searches:  # one after another, as the official loop does
            if isinstance(search, _Search):
                asyncio.run(engine._search(search))
    return generated


# ------------------------------------------------------------------ main
DESIGNS = ("engine", "round_synchronous", "per_trajectory")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="nano", help='"nano" or a checkpoint folder')
    parser.add_argument("--samples", type=int, default=4, help="questions")
    parser.add_argument("--n", type=int, default=2, help="trajectories per question")
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--reason-min", type=int, default=24, help="free reasoning tokens, min")
    parser.add_argument("--reason-max", type=int, default=120, help="free reasoning tokens, max")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--search",
        choices=["config", "world"],
        default="config",
        help="tools (see make_bench_tools)",
    )
    parser.add_argument(
        "--designs", default="engine,round_synchronous,per_trajectory", help="comma list"
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="run every design this many times; medians"
    )
    args = parser.parse_args()
    if unknown := set(args.designs.split(",")) - set(DESIGNS):
        raise SystemExit(f"--designs: unknown {sorted(unknown)}; choose from {DESIGNS}")
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {args.repeats}")
    torch.manual_seed(0)
    policy = load_policy(args.model)
    tools, label = make_bench_tools(args.latency_ms / 1000, args.search)
    if args.threads:  # after the tools: building a search index wants every core
        torch.set_num_threads(args.threads)
    samples = [q for q in load_world().questions if q.tools == "image"][: args.samples]
    config = EngineConfig(max_new_tokens=args.max_new_tokens, batch_size=args.samples * args.n)
    schedule = Schedule(policy.tokenizer, args.n, args.reason_min, args.reason_max)
    longest = args.reason_max + 40  # forced tags + query/answer tokens, generously
    if args.max_new_tokens < longest:
        raise SystemExit(f"--max-new-tokens must be >= {longest} for --reason-max")
    print(
        f"policy {policy.name} on {policy.device} ({torch.get_num_threads()} threads); "
        f"{len(samples)} questions x {args.n} = {len(samples) * args.n} trajectories; tools: "
        f"{label}, +{args.latency_ms:.0f} ms each; reasoning {args.reason_min}..{args.reason_max} "
        f"tokens per turn"
    )
    # Designs interleave within each repeat, so a slow spell of the machine hits all of them.
    rates: dict[str, list[float]] = {design: [] for design in args.designs.split(",")}
    for repeat in range(args.repeats):
        for design in rates:
            generated, seconds = run_design(design, policy, tools, config, schedule, samples, args)
            rates[design].append(generated / seconds)
            print(
                f"[{repeat + 1}/{args.repeats}] {design:>18}: {generated:5d} tokens in "
                f"{seconds:7.1f} s = {generated / seconds:6.1f} tok/s",
                flush=True,
            )
        if "engine" in rates:
            for design in rates:
                if design != "engine":
                    ratio = rates["engine"][-1] / rates[design][-1]
                    print(f"[{repeat + 1}/{args.repeats}] engine / {design}: {ratio:.2f}x")
    if "engine" in rates and args.repeats > 1:
        print(f"medians over {args.repeats} repeats:")
        for design, values in rates.items():
            print(f"{design:>18}: {statistics.median(values):6.1f} tok/s")
        for design in rates:
            if design != "engine":
                ratios = [e / b for e, b in zip(rates["engine"], rates[design], strict=True)]
                print(
                    f"engine / {design}: median {statistics.median(ratios):.2f}x "
                    f"(runs: {', '.join(f'{r:.2f}x' for r in ratios)})"
                )


def run_design(design, policy, tools, config, schedule, samples, args) -> tuple[int, float]:
    """Generate the workload with one design; returns (tokens generated, seconds)."""
    engine = RolloutEngine(policy, tools, config, forcer=schedule)  # type: ignore[arg-type]
    started = time.perf_counter()
    if design == "engine":
        trajectories = engine.rollout(samples, n=args.n, seed=0)
        generated = sum(t.n_sampled_tokens for t in trajectories)
        keys = ("prefill_s", "decode_s", "merge_s")
        split = ", ".join(f"{key} {engine.stats.get(key, 0.0):.1f}" for key in keys)
        print(f"{'':>20}engine time: {split}; {engine.stats['decode_steps']} decode steps")
    elif design == "per_trajectory":
        generated = per_trajectory(engine, schedule, samples, args.n)
    elif design == "round_synchronous":
        generated = round_synchronous(engine, schedule, samples, args.n)
    else:
        raise ValueError(f"unknown design {design!r}")
    return generated, time.perf_counter() - started


if __name__ == "__main__":
    main()
