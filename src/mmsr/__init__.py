"""mmsr: MMSearch-R1 — reinforcement learning that teaches a multimodal model when to search."""

__version__ = "0.1.0"
