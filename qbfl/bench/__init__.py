"""Benchmarks that reproduce the paper's tables and figures; the qbfl-bench CLI."""
