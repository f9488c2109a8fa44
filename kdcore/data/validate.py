"""Data checks with Great Expectations: a failed check stops the stage, names what failed and
leaves an HTML report.

Checks are declared as (expectation class name, kwargs) so that great_expectations, slow to import,
is imported only when a suite actually runs.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from kdcore.artifacts import write_text
from kdcore.errors import ValidationFailed

Check = tuple[str, dict[str, Any]]  # ("ExpectColumnValuesToBeUnique", {"column": "sample_id"})


@dataclass(frozen=True)
class CheckResult:
    table: str
    expectation: str
    kwargs: dict[str, Any]
    success: bool
    observed: str

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.kwargs.items() if k != "batch_id")
        return f"{self.table}: {self.expectation}({args}) observed {self.observed}"


def _observed(result: dict[str, Any]) -> str:
    if result.get("observed_value") is not None:
        value = result["observed_value"]
        return f"{float(value):.6g}" if isinstance(value, float) else str(value)
    if "unexpected_count" in result:
        sample = result.get("partial_unexpected_list") or []
        shown = f", e.g. {sample[:3]}" if sample else ""
        return f"{result['unexpected_count']} unexpected{shown}"
    return "-"


def run_suites(tables: dict[str, tuple[pd.DataFrame, list[Check]]], suite: str) -> list[CheckResult]:
    """Validates each DataFrame against its checks; returns every check's outcome."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas(f"kdflow-{suite}")
    outcomes: list[CheckResult] = []
    for table, (frame, checks) in tables.items():
        definition = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
        batch = definition.get_batch(batch_parameters={"dataframe": frame})
        expectations = gx.ExpectationSuite(name=f"{suite}-{table}")
        for name, kwargs in checks:
            expectations.add_expectation(getattr(gx.expectations, name)(**kwargs))
        result = batch.validate(expectations)
        for item in result.results:
            config = item.expectation_config
            outcomes.append(
                CheckResult(table, config.type, dict(config.kwargs), bool(item.success), _observed(item.result))
            )
    return outcomes


def render_report(outcomes: list[CheckResult], title: str) -> str:
    """A self-contained HTML page: one row per check, failures first."""
    rows = []
    for o in sorted(outcomes, key=lambda o: o.success):
        args = html.escape(", ".join(f"{k}={v}" for k, v in o.kwargs.items() if k != "batch_id"))
        status = "pass" if o.success else "FAIL"
        rows.append(
            f'<tr class="{status.lower()}"><td>{status}</td><td>{html.escape(o.table)}</td>'
            f"<td><code>{html.escape(o.expectation)}</code></td><td>{args}</td><td>{html.escape(o.observed)}</td></tr>"
        )
    failed = sum(not o.success for o in outcomes)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
tr.fail{{background:#fdd}}tr.pass{{background:#efe}}</style>
</head><body><h1>{html.escape(title)}</h1>
<p>{len(outcomes) - failed} of {len(outcomes)} checks passed (Great Expectations).</p>
<table><tr><th>result</th><th>table</th><th>expectation</th><th>arguments</th><th>observed</th></tr>
{"".join(rows)}
</table></body></html>
"""


def validate_or_fail(
    tables: dict[str, tuple[pd.DataFrame, list[Check]]], suite: str, report_path: Path
) -> list[CheckResult]:
    """Runs the suites, always writes the report, raises ValidationFailed naming the failed checks."""
    outcomes = run_suites(tables, suite)
    write_text(report_path, render_report(outcomes, f"kdflow {suite} data checks"))
    failed = [o for o in outcomes if not o.success]
    if failed:
        listed = "; ".join(o.describe() for o in failed[:3])
        more = f" (+{len(failed) - 3} more)" if len(failed) > 3 else ""
        raise ValidationFailed(
            f"{suite}: {len(failed)} of {len(outcomes)} data checks failed: {listed}{more}; report: {report_path}"
        )
    return outcomes
