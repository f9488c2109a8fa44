"""Thin Prefect tasks (run a stage, commit results, diff metrics, gate). They call kdcore stages only."""
