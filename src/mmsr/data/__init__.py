"""Typed sample records and their file formats (JSONL + images, FVQA parquet)."""
