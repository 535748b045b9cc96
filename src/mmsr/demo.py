"""`mmsr demo` (what `make demo` runs): the embedded default end to end.

Until training exists this shows the two halves it will join: the offline world (countries,
flags, questions) and the nano policy (SmolLM2 inside Qwen2.5-VL). The vision tower is
untrained here, so the flag answer is a guess; the text answer is SmolLM2's own knowledge.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.panel import Panel

from mmsr.data.record import Sample

CAPITAL_QUESTION = "What is the capital of France?"


def run_demo(console: Console) -> None:
    world = _show_world(console)
    policy = _load_nano(console)
    _ask_text(console, policy)
    if world is not None:
        _ask_about_flag(console, policy, world)


def _show_world(console: Console):
    console.rule("[bold]1. The offline world")
    try:
        from mmsr.world.info import render_info, world_info
        from mmsr.world.load import load_world

        world = load_world()
        render_info(world_info(), console)
    except (ImportError, FileNotFoundError) as err:
        hint = "" if "mmsr world build" in str(err) else " Build it with `mmsr world build`."
        console.print(
            f"[yellow]The embedded world is not available:[/] {err}.{hint} "
            "Continuing with the model alone."
        )
        return None
    return world


def _load_nano(console: Console):
    from mmsr.models.loading import load_policy

    console.rule("[bold]2. The nano policy")
    start = time.perf_counter()
    policy = load_policy("nano", console=console)
    seconds = time.perf_counter() - start
    n_params = sum(p.numel() for p in policy.model.parameters())
    n_vision = sum(p.numel() for p in policy.model.model.visual.parameters())
    console.print(
        f"loaded {type(policy.model).__name__} in {seconds:.1f} s: "
        f"{n_params / 1e6:.1f} M parameters ({n_vision / 1e6:.1f} M in the vision tower), "
        f"{policy.device}, {policy.dtype}"
    )
    return policy


def _ask_text(console: Console, policy) -> None:
    from mmsr.models.generate import generate_reply, user_message

    console.rule("[bold]3. A text question (SmolLM2's own knowledge)")
    reply = generate_reply(policy, [user_message(CAPITAL_QUESTION)])
    console.print(f"[bold]Q:[/] {CAPITAL_QUESTION}")
    console.print(f"[bold]A:[/] {reply.text}")
    console.print(f"[dim]{reply.n_new_tokens} tokens in {reply.seconds:.1f} s[/]")


def _pick_flag_question(questions: list[Sample]) -> Sample | None:
    """A held-out flag question (the flag is what the vision tower must learn to read)."""
    with_image = [q for q in questions if q.images]
    flags = [q for q in with_image if q.extra.get("qtype") == "flag" or "flag" in q.tags]
    for pool in ([q for q in flags if q.split == "test"], flags, with_image):
        if pool:
            return pool[0]
    return None


def _ask_about_flag(console: Console, policy, world) -> None:
    from mmsr.models.generate import generate_reply, user_message

    console.rule("[bold]4. A world question with its photo (vision tower untrained)")
    sample = _pick_flag_question(world.questions)
    if sample is None:
        console.print("[yellow]The world has no question with an image.[/]")
        return
    image = sample.images[0].bytes or sample.images[0].path
    reply = generate_reply(policy, [user_message(sample.question, n_images=1)], [image])
    console.print(f"[bold]question[/] ({sample.id}, {sample.split}): {sample.question}")
    console.print(f"[bold]image:[/] {sample.images[0].path or f'{len(image)} bytes'}")
    console.print(f"[bold]gold answer:[/] {sample.answer}")
    console.print(f"[bold]model:[/] {reply.text}")
    console.print(
        Panel(
            "The vision tower is still random, so the model cannot read the picture yet: "
            "this reply is a guess. "
            "Training (align, then GRPO with search) teaches the model to read the flag "
            "or to search for it.",
            style="dim",
        )
    )
