"""Prefect flows over the DVC pipeline: order, fan-out, schedules and gates. No tensor maths here."""
