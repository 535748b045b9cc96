"""Multi-turn search rollouts: the tag protocol, prompts, the engine and trajectories.

Keep this file free of heavy imports: `mmsr.reward` imports `mmsr.rollout.protocol`,
which must stay usable without torch (veRL reward workers import it on CPU).
"""
