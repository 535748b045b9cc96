"""Training: the nano model's eye (align), SFT warm-start, and the GRPO trainer."""
