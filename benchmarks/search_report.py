"""reports/search.md from reports/search.csv, search_meta.json and search_trials_<teacher>.csv
(benchmarks/search.py makes them; `python benchmarks/search.py --report-only` remakes the page)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from kdcore.artifacts import write_text

MARGIN = 0.5  # points of test accuracy a searched student must gain over a default at no more cost


def per_student(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread over the seeds of each (teacher, student)."""
    grouped = rows.groupby(["teacher", "spec"], sort=False)
    table = grouped.agg(
        student=("student", "first"), role=("role", "first"), seeds=("seed", "count"),
        search_val=("search_val_accuracy", "first"), params=("params", "first"),
        size=("size_bytes_int8", "first"), latency=("latency_ms_int8", "median"),
        latency_b256=("latency_ms_b256_int8", "median"), acc=("test_accuracy_int8", "mean"),
        acc_sd=("test_accuracy_int8", "std"), acc_torch=("test_accuracy", "mean"),
    )  # fmt: skip
    return table.reset_index()


def dominance(table: pd.DataFrame, teacher: str, defaults: set[str]) -> list[str]:
    """For each default: the searched students that are at least MARGIN points more accurate (int8, test,
    mean over seeds) with a file no larger and a latency no higher, or a line saying none is."""
    mine = table[table["teacher"] == teacher]
    is_default = mine["spec"].isin(defaults)  # a default the search also found is still a default here
    searched = mine[(mine["role"] != "default") & ~is_default]
    lines = [] if is_default.sum() == len(defaults) else ["- Not every default was retrained yet (see the table)."]
    for d in mine[is_default].itertuples():
        better = searched[(searched["acc"] >= d.acc + MARGIN / 100) & (searched["size"] <= d.size)
                          & (searched["latency"] <= d.latency)]  # fmt: skip
        if better.empty:
            cheaper = searched[(searched["size"] <= d.size) & (searched["latency"] <= d.latency)]
            best = cheaper.sort_values("acc", ascending=False).head(1)
            detail = (
                f"; the best front student at no more cost is {best.iloc[0].student} at "
                f"{best.iloc[0].acc * 100:.2f}% ({(best.iloc[0].acc - d.acc) * 100:+.2f} points)"
                if not best.empty
                else "; no front student costs as little"
            )
            lines.append(f"- {d.student} ({d.acc * 100:.2f}%): **not dominated** by {MARGIN} points{detail}.")
        else:
            names = ", ".join(f"{b.student} ({b.acc * 100:.2f}%, {(b.acc - d.acc) * 100:+.2f} points, "
                              f"{int(b.size):,} bytes, {b.latency:.4f} ms)" for b in better.itertuples())  # fmt: skip
            lines.append(f"- {d.student} ({d.acc * 100:.2f}%, {int(d.size):,} bytes, {d.latency:.4f} ms): "
                         f"dominated by {names}.")  # fmt: skip
    return lines


def write_report(reports: Path, search_cfg: dict, trials: int, defaults: dict[str, dict]) -> None:
    from kdcore.config.search import SearchBudget
    from kdcore.search.results import save_front_png

    rows = pd.read_csv(reports / "search.csv").drop_duplicates(["teacher", "spec", "seed"], keep="last")
    meta = json.loads((reports / "search_meta.json").read_text())
    searched = [t for t in ("default", "narrow") if t in meta] + [t for t in meta if t not in ("default", "narrow")]
    fronts = {}
    for teacher in searched:  # each search's front, drawn from its trials
        frame = pd.read_csv(reports / f"search_trials_{teacher}.csv")
        fronts[teacher] = frame[frame["on_front"]].sort_values("latency_ms")
        chosen = frame[frame["chosen"]]["student"].tolist()
        title = f"student search, teacher {teacher}: {len(frame)} trials, chosen {', '.join(chosen) or 'none'}"
        save_front_png(reports / f"search_front_{teacher}.png", frame, SearchBudget(**search_cfg["budget"]), title)
    table = per_student(rows)
    budget = {k: v for k, v in search_cfg["budget"].items() if v is not None}
    lines = [
        "# Student architecture search",
        "",
        "Made by `python benchmarks/search.py` (rows in `reports/search.csv`, each search's trials in "
        "`reports/search_trials_<teacher>.csv`). The bundled digits; the search ran on params.yaml's seed with "
        f"{trials} trials, the shipped space and budget ({', '.join(f'{k} {v}' for k, v in budget.items())}, "
        "on the int8 ONNX file in onnxruntime, one thread), scored on the validation split. Every student on "
        "a front and the two hand-picked defaults were then distilled again with the full student schedule on "
        f"seeds {sorted(rows['seed'].unique().tolist())} (not used by the search), exported to int8 ONNX and "
        "measured where they ship: test accuracy in onnxruntime, file size, latency. Machine: 2 CPU cores.",
        "",
    ]
    for teacher in searched:
        m = meta.get(teacher, {})
        mine = table[table["teacher"] == teacher].sort_values(["role", "latency"])
        lines += [
            f"## Teacher: {teacher}",
            "",
            f"Search: {m.get('search_seconds', float('nan')) / 60:.1f} minutes for "
            f"{m.get('students_trained')} students trained within budget, {m.get('students')} distinct students "
            f"measured, in {m.get('trials')} draws (a repeated architecture reuses its result; the counts by status "
            f"include repeats: {m.get('trials_complete', 0)} trained to the end, {m.get('trials_pruned', 0)} stopped "
            f"early, {m.get('trials_over_budget', 0)} over budget and never trained). "
            f"Stopping early saved {m.get('pruned_epochs_saved', 0)} epochs, "
            f"about {m.get('pruned_seconds_saved', 0):.0f} s of training. Chosen: {m.get('chosen', 'none')} "
            f"(validation {m.get('val_accuracy', float('nan')) * 100:.2f}%).",
            "",
            f"![front](search_front_{teacher}.png)",
            "",
        ]
        if mine.empty:  # not retrained: the front as the search measured it
            lines += [
                "The front on the validation split (not retrained on other seeds):",
                "",
                "| student | parameters | int8 file | latency b1 | latency b256 | validation |",
                "|---|---:|---:|---:|---:|---:|",
            ]
            for r in fronts[teacher].itertuples():
                lines.append(
                    f"| {r.student}{' (chosen)' if r.chosen else ''} | {int(r.params):,} | {int(r.size_bytes):,} B | "
                    f"{r.latency_ms:.4f} ms | {r.latency_ms_b256:.3f} ms | {r.val_accuracy * 100:.2f}% |"
                )
            lines.append("")
            continue
        lines += [
            "| student | role | parameters | int8 file | latency b1 | latency b256 | validation (search) | "
            "test, int8 ONNX | test, torch |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in mine.itertuples():
            val = f"{r.search_val * 100:.2f}%" if pd.notna(r.search_val) else "-"
            sd = f" ± {r.acc_sd * 100:.2f}" if pd.notna(r.acc_sd) else ""
            lines.append(
                f"| {r.student} | {r.role} | {int(r.params):,} | {int(r.size):,} B | {r.latency:.4f} ms | "
                f"{r.latency_b256:.3f} ms | {val} | {r.acc * 100:.2f}%{sd} | {r.acc_torch * 100:.2f}% |"
            )
        lines += ["", f"Against the defaults (int8 test accuracy, mean of {int(mine['seeds'].max())} seeds):", ""]
        lines += dominance(table, teacher, {json.dumps(spec, sort_keys=True) for spec in defaults.values()})
        lines.append("")
    if len(searched) > 1:
        lines += ["## Does the best student depend on the teacher?", "",
                  "The fronts on the validation split, each search under the same budget and space:", ""]  # fmt: skip
        names = {t: set(fronts[t]["student"]) for t in searched}
        for t in searched:
            chosen = fronts[t][fronts[t]["chosen"]]["student"].tolist()
            lines.append(f"- {t}: front {', '.join(fronts[t]['student'])}; chosen {', '.join(chosen) or 'none'}.")
        shared = set.intersection(*names.values())
        lines.append(f"- On every front: {', '.join(sorted(shared)) or 'no student'}.")
        lines.append("")
    write_text(reports / "search.md", "\n".join(lines))
    print(f"search_report: -> {reports / 'search.md'}")
