"""Evaluation: direct / RAG / on-demand runs, judges, metrics, reports and the viewer."""
