"""reports/methods.md from the rows of a methods sweep (one row per method and seed).

Every figure is a mean over seeds with its spread; the gain of a method is over the scratch student
of the same run (same architecture, views and epochs). A method is called helpful only when it
gains on every seed, harmful when it loses on every seed, and mixed otherwise.
"""

from __future__ import annotations

import pandas as pd


def summary_columns(summary: dict, teachers: list[str]) -> dict:
    """The comparison's quality columns from one run's metrics/summary.json: the teachers, the
    scratch student, the distilled student and its gain in points."""
    kd, scratch = summary["student_kd"], summary["student_scratch"]
    return {
        "student_params": kd["params"],
        "teachers": ",".join(teachers),
        "teacher_accuracy": summary["teacher"]["accuracy"],
        **{f"teacher_accuracy/{t}": summary[f"teacher/{t}"]["accuracy"] for t in teachers},
        "scratch_accuracy": scratch["accuracy"],
        "val_accuracy": kd.get("val_accuracy"),
        "val_scratch_accuracy": scratch.get("val_accuracy"),
        "accuracy": kd["accuracy"],
        "gain_points": round((kd["accuracy"] - scratch["accuracy"]) * 100, 2),
        "nll": kd["nll"],
        "ece": kd["ece"],
        "agreement": kd["agreement"],
    }


def verdict(gains: pd.Series) -> str:
    if (gains > 0).all():
        return "helps on every seed"
    if (gains < 0).all():
        return "hurts on every seed"
    if (gains <= 0).all():
        return "never helps"
    return "mixed"


def _pm(values: pd.Series, scale: float = 100.0, digits: int = 2) -> str:
    sd = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean() * scale:.{digits}f} ± {sd * scale:.{digits}f}"


def method_table(rows: pd.DataFrame, labels: dict[str, str], group: str, info: dict) -> list[str]:
    methods = [
        m for m in labels if (rows["method"] == m).any() and rows.loc[rows["method"] == m, "group"].iloc[0] == group
    ]
    if not methods:
        return []
    reference = info.get("reference")
    ref = rows[rows["method"] == reference].set_index("seed")["accuracy"] if reference else None
    lines = [
        f"### {info.get('title', group)}",
        "",
        "| method | accuracy % | gain over scratch (points) | per seed | vs "
        f"`{reference or '-'}` (points) | verdict | student training (s) | teachers (s) |",
        "|---|---:|---:|---|---:|---|---:|---:|",
    ]
    scratch = rows[rows["method"] == methods[0]]
    lines.append(
        f"| scratch student (CE on the same views) | {_pm(scratch['scratch_accuracy'])} | 0 | | | | "
        f"{scratch['scratch_s'].mean():.1f} | |"
    )
    for method in methods:
        part = rows[rows["method"] == method].sort_values("seed")
        gains = part["gain_points"]
        per_seed = ", ".join(f"{g:+.1f}" for g in gains)
        versus = ""
        if ref is not None and method != reference:
            diff = (part.set_index("seed")["accuracy"] - ref).dropna() * 100
            versus = f"{diff.mean():+.2f}" if len(diff) else ""
        lines.append(
            f"| {labels[method]} (`{method}`) | {_pm(part['accuracy'])} | {gains.mean():+.2f} "
            f"({gains.min():+.1f} .. {gains.max():+.1f}) | {per_seed} | {versus} | {verdict(gains)} | "
            f"{part['distill_s'].mean():.1f} | {part['teachers_s'].mean():.1f} |"
        )
    lines.append("")
    for method in methods:
        part = rows[rows["method"] == method]
        if "generation_accuracies" not in part or part["generation_accuracies"].isna().all():
            continue
        per_gen = part["generation_accuracies"].astype(str).str.split().apply(lambda xs: [float(x) for x in xs])
        if per_gen.map(len).max() < 2:
            continue
        means = pd.DataFrame(per_gen.tolist()).mean() * 100
        shown = ", ".join(f"generation {g + 1}: {m:.2f}%" for g, m in means.items())
        lines += [f"`{method}`, test accuracy by generation (mean over seeds): {shown}.", ""]
    return lines


def ensemble_versus_best_single(rows: pd.DataFrame, ensemble: str, singles: list[str]) -> list[str]:
    """Per seed: the ensemble-distilled student against the student of the single teacher with the
    best test accuracy (the teacher is chosen by its own accuracy, not by its student's). Teachers
    tied for best count alike: the comparison is with the mean of their students."""
    lines = [
        f"### `{ensemble}` against the best single teacher",
        "",
        "| seed | best single teacher (its accuracy %) | its student % | ensemble (accuracy %) | "
        "ensemble's student % | difference (points) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    diffs = []
    for seed in sorted(rows["seed"].unique()):
        here = rows[rows["seed"] == seed]
        candidates = here[here["method"].isin(singles)]
        team = here[here["method"] == ensemble]
        if candidates.empty or team.empty:
            continue
        best = candidates[candidates["teacher_accuracy"] == candidates["teacher_accuracy"].max()]
        best_student = best["accuracy"].mean()
        names = ", ".join(best["teachers"])
        tie = f" (tied: mean of {len(best)} students)" if len(best) > 1 else ""
        team = team.iloc[0]
        diff = (team["accuracy"] - best_student) * 100
        diffs.append(diff)
        lines.append(
            f"| {seed} | {names} ({best['teacher_accuracy'].iloc[0] * 100:.1f}) | {best_student * 100:.1f}{tie} | "
            f"{team['teacher_accuracy'] * 100:.1f} | {team['accuracy'] * 100:.1f} | {diff:+.1f} |"
        )
    if diffs:
        mean = sum(diffs) / len(diffs)
        wins = sum(d > 0 for d in diffs)
        lines += [
            "",
            f"Mean difference: **{mean:+.2f} points** over {len(diffs)} seeds; the ensemble's student is ahead "
            f"on {wins} of {len(diffs)}. Both students have the same budget (views, epochs); the ensemble costs "
            "the training of all its teachers.",
            "",
        ]
    return lines


def render_methods_report(
    rows: pd.DataFrame,
    labels: dict[str, str],
    groups: dict[str, str],
    command: str,
    group_info: dict[str, dict] | None = None,
    data: str = "the default data",
    image: str | None = None,
) -> str:
    """groups: method -> group; group_info: group -> {title, reference (a method to compare with)}."""
    group_info = group_info or {}
    rows = rows.assign(group=rows["method"].map(groups))
    seeds = sorted(rows["seed"].unique())
    lines = [
        "# Distillation methods compared",
        "",
        f"Made by `{command}`: every method on {data}, seeds {', '.join(map(str, seeds))}, on the CPU. "
        "Accuracy is on the test split, mean ± sample standard deviation over the seeds. The gain is over the "
        "scratch student of the same run; the verdict calls a method helpful only if it gains on every seed. "
        "Training times are wall-clock seconds on this machine; a stage reused from another method counts "
        "the time it took when it ran.",
        "",
        *([f"![gain over the scratch student, per method and seed]({image})", ""] if image else []),
    ]
    for group in dict.fromkeys(groups.values()):
        lines += method_table(rows, labels, group, group_info.get(group, {}))
    singles = [m for m, g in groups.items() if g == "single"] + ["hinton"]
    for ensemble in [m for m, g in groups.items() if g == "ensemble"]:
        if (rows["method"] == ensemble).any():
            lines += ensemble_versus_best_single(rows, ensemble, singles)
    return "\n".join(lines)


def save_methods_png(path, rows: pd.DataFrame, labels: dict[str, str], groups: dict[str, str]) -> None:
    """Gain over scratch per method: a bar at the mean, a dot per seed, methods grouped as in the report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kdcore.artifacts import atomic_path

    methods = [m for m in labels if (rows["method"] == m).any()]
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(methods) + 1.2))
    palette = plt.get_cmap("tab10")
    group_color = {g: palette(i) for i, g in enumerate(dict.fromkeys(groups[m] for m in methods))}
    for y, method in enumerate(methods):
        gains = rows.loc[rows["method"] == method, "gain_points"]
        ax.barh(y, gains.mean(), color=group_color[groups[method]], alpha=0.6, label=groups[method])
        ax.plot(gains, [y] * len(gains), "o", color="black", markersize=3)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(methods)), methods, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("gain over the scratch student (points of test accuracy); dots: seeds")
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
