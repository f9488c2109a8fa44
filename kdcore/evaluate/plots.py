"""Pictures people would rather look at than read: confusion matrices and training curves."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from kdcore.artifacts import atomic_path


def save_png(fig, path: Path, dpi: int = 110) -> None:
    """Writes a matplotlib figure as PNG atomically, without the version stamp (same figure, same bytes)."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)


def confusion_matrix(y: torch.Tensor, pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(classes, classes) counts, rows = true class, columns = predicted class."""
    return torch.bincount(y * num_classes + pred, minlength=num_classes**2).view(num_classes, num_classes)


def save_confusion_png(path: Path, matrices: dict[str, torch.Tensor], class_names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(matrices), figsize=(4.2 * len(matrices), 4.2), squeeze=False)
    for ax, (name, cm) in zip(axes[0], matrices.items(), strict=True):
        share = cm.float() / cm.sum(1, keepdim=True).clamp_min(1)
        ax.imshow(share.numpy(), cmap="Blues", vmin=0, vmax=1)
        acc = cm.diag().sum().item() / max(cm.sum().item(), 1)
        ax.set_title(f"{name} (accuracy {acc:.3f})", fontsize=10)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ticks = range(len(class_names))
        ax.set_xticks(ticks, class_names, fontsize=7)
        ax.set_yticks(ticks, class_names, fontsize=7)
        for i in ticks:
            for j in ticks:
                if cm[i, j]:
                    ax.text(
                        j,
                        i,
                        int(cm[i, j]),
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if share[i, j] > 0.5 else "black",
                    )
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def read_live_metric(live_dir: Path, metric: str) -> pd.DataFrame | None:
    """A dvclive metric history (columns step, value) or None if the run logged none."""
    path = Path(live_dir) / "plots" / "metrics" / f"{metric}.tsv"
    if not path.is_file():
        return None
    frame = pd.read_csv(path, sep="\t")
    return frame.rename(columns={frame.columns[-1]: "value"})[["step", "value"]]


CURVE_TITLES = {
    "eval/accuracy": "test accuracy",
    "train/accuracy": "train accuracy (labeled views)",
    "train/loss": "train loss (own objective)",
}


def save_curves_png(path: Path, runs: dict[str, Path], metrics: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for name, live_dir in runs.items():
            frame = read_live_metric(live_dir, metric)
            if frame is not None:
                ax.plot(frame["step"] + 1, frame["value"], label=name, marker=".")
        ax.set_title(CURVE_TITLES.get(metric, metric), fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        else:  # e.g. train accuracy when no transfer view has a label (a synthetic transfer set)
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def save_sample_grid(
    path: Path,
    images: torch.Tensor,
    predicted: torch.Tensor,
    class_names: list[str],
    mean: list[float],
    std: list[float],
    title: str,
    per_class: int = 8,
) -> None:
    """A grid with one row per class: up to `per_class` images the teacher assigns to that class.

    images: (N, C, H, W) normalised with `mean` / `std`; predicted: (N,) the teacher's classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    pixels = (images * s + m).clamp(0, 1)  # back to [0, 1]
    vectors = images.shape[-2:] == (1, 1) and images.shape[1] not in (1, 3)
    rows = len(class_names)
    fig, axes = plt.subplots(rows, per_class, figsize=(0.9 * per_class, 0.95 * rows + 0.4), squeeze=False)
    for k, name in enumerate(class_names):
        chosen = (predicted == k).nonzero().flatten()[:per_class]
        for j in range(per_class):
            ax = axes[k][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if j < len(chosen) and vectors:  # (D, 1, 1) features as one row of colours, normalised units
                ax.imshow(images[chosen[j]].view(1, -1).numpy(), cmap="coolwarm", vmin=-3, vmax=3, aspect="auto")
            elif j < len(chosen):
                img = pixels[chosen[j]]
                shown = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)
                ax.imshow(shown.numpy(), cmap="gray" if img.shape[0] == 1 else None, vmin=0, vmax=1)
            if j == 0:
                ax.set_ylabel(f"{name} ({len((predicted == k).nonzero())})", fontsize=7, rotation=0, ha="right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)


def per_class_accuracy(y: torch.Tensor, pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(classes,) share of each class's test samples predicted correctly (NaN for a class with none)."""
    total = torch.bincount(y, minlength=num_classes).double()
    correct = torch.bincount(y[pred == y], minlength=num_classes).double()
    return torch.where(total > 0, correct / total.clamp_min(1), torch.nan)


def save_per_class_png(path: Path, accuracy: dict[str, list[float]], class_names: list[str]) -> None:
    """A heatmap: one row per model, one column per class, the test accuracy in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(accuracy)
    grid = torch.tensor([accuracy[n] for n in names], dtype=torch.float64)  # (models, classes)
    fig, ax = plt.subplots(figsize=(0.6 * len(class_names) + 2.8, 0.45 * len(names) + 1.2))
    ax.imshow(grid.numpy(), cmap="RdYlGn", vmin=max(0.0, float(torch.nan_to_num(grid, 1.0).min()) - 0.05), vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("class")
    for i in range(len(names)):
        for j in range(len(class_names)):
            ax.text(j, i, f"{grid[i, j] * 100:.0f}", ha="center", va="center", fontsize=7)
    ax.set_title("test accuracy per class (%)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def save_accuracy_matrix_png(path: Path, matrix: list[list[float]], names: list[str], title: str) -> None:
    """Heatmap of R[i][j]: accuracy after learning increment i (row) on increment j's test data (column)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = 1.2 + 0.75 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=1)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value * 100:.1f}", ha="center", va="center", fontsize=8,
                    color="white" if value < 0.6 else "black")  # fmt: skip
    ticks = range(len(names))
    ax.set_xticks(ticks, names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(ticks, names, fontsize=8)
    ax.set_xlabel("test data of increment j")
    ax.set_ylabel("after learning increment i")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, label="accuracy")
    fig.tight_layout()
    save_png(fig, path)
