"""Evaluation: quality metrics, cost metrics (size, latency), plots and the report."""
