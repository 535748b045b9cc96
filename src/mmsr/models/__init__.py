"""Policies: any transformers Qwen-VL checkpoint, and the built-in nano policy."""
