"""Evaluation: generation engines, benchmarks, scoring, step analysis, statistics and the predictions file."""
