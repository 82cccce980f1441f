"""Evaluation: metrics (DCASE 2020 and 2021-2025), evaluate_run, baselines, benchmarks and suites,
figures, and the paper's reproduction."""
