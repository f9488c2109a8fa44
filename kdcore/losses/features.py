"""Intermediate features of a model, captured by name, and the losses that compare them.

Layers are named by module path (`features.3`, `layer2.1.conv2`, as `model.named_modules()` lists
them). Names are checked when the taps are made: an unknown name fails at start-up with the list
of valid ones, never mid-training.

Feature losses map (student features, teacher features) to LossTerms; the teacher side is always
detached. Each loss has a teacher-side reduction (`TEACHER_SIDE`): what of the teacher's feature it
needs, computed once per view so the teacher need not run during training. The losses accept the
teacher's raw features or their reductions alike (each reduction is idempotent).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeFloat, PositiveFloat, model_validator
from torch import nn

from kdcore.errors import ConfigError
from kdcore.losses import TERMS, LossTerms
from kdcore.registry import Registry
from kdcore.schema import Term

FEATURE_LOSSES: Registry = Registry("feature loss")


class FeatureTaps:
    """Forward hooks that keep the latest output of each named submodule. Use as a context manager."""

    def __init__(self, model: nn.Module, names: list[str], role: str = "model") -> None:
        modules = dict(model.named_modules())
        unknown = [n for n in names if n not in modules]
        if unknown:
            valid = [n for n in modules if n]
            shown = ", ".join(valid[:40]) + (f", ... ({len(valid)} in all)" if len(valid) > 40 else "")
            raise ConfigError(f"{role} has no layer {', '.join(map(repr, unknown))}; valid layers: {shown}")
        self.names = list(names)
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [modules[n].register_forward_hook(self._keep(n)) for n in names]

    def _keep(self, name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            # a copy: a following in-place op (ReLU(inplace=True)) must not change what was captured
            self.outputs[name] = output.clone()

        return hook

    def features(self) -> list[torch.Tensor]:
        """The captured outputs in the order the names were given."""
        return [self.outputs[n] for n in self.names]

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()

    def __enter__(self) -> FeatureTaps:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class HintRegressor(nn.Module):
    """FitNets' learned regressor from a student feature to the teacher's shape: a 1x1 convolution
    (resized to the teacher's spatial size) for maps, a linear layer for vectors."""

    def __init__(self, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> None:
        super().__init__()
        if len(student_shape) != len(teacher_shape) or len(student_shape) not in (1, 3):
            raise ConfigError(
                f"hint layers must both be maps (C, H, W) or both vectors (D,); got {student_shape} and {teacher_shape}"
            )
        self.size = teacher_shape[1:] if len(teacher_shape) == 3 else None
        if self.size is not None:
            self.map = nn.Conv2d(student_shape[0], teacher_shape[0], kernel_size=1)
        else:
            self.map = nn.Linear(student_shape[0], teacher_shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.size is not None and tuple(x.shape[2:]) != tuple(self.size):
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return self.map(x)


@FEATURE_LOSSES.register("hint")
def hint_loss(
    student: list[torch.Tensor], teacher: list[torch.Tensor], regressors: nn.ModuleList | None = None
) -> LossTerms:
    """FitNets (Romero et al. 2015): mean over layer pairs of || r(F_s) - F_t ||^2 / numel.

    r is the learned regressor of each pair (identity when none is given)."""
    terms = []
    for i, (fs, ft) in enumerate(zip(student, teacher, strict=True)):
        mapped = regressors[i](fs) if regressors is not None else fs
        terms.append(F.mse_loss(mapped, ft.detach()))
    hint = torch.stack(terms).mean()
    return LossTerms(total=hint, parts={"hint": hint})


def attention_map(feature: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """(batch, C, H, W) -> (batch, H, W): mean over channels of |A|^p, L2-normalised per sample.
    A (batch, H, W) input is taken to be a map already and returned as it is."""
    if feature.ndim == 3:
        return feature
    if feature.ndim != 4:
        raise ConfigError(
            f"attention transfer needs conv feature maps (batch, C, H, W), got shape {tuple(feature.shape)}"
        )
    q = feature.abs().pow(p).mean(1)  # (batch, H, W)
    return F.normalize(q.flatten(1), dim=1).view_as(q)


@FEATURE_LOSSES.register("attention")
def attention_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], p: float = 2.0) -> LossTerms:
    """Attention transfer (Zagoruyko & Komodakis 2017): sum over layer pairs of
    || Q_s / ||Q_s|| - Q_t / ||Q_t|| ||_2 (mean over the batch), Q = sum_c |A_c|^p.

    A student map of another spatial size is resized to the teacher's first. The teacher side may
    be given as its attention maps (batch, H, W)."""
    terms = []
    for fs, ft in zip(student, teacher, strict=True):
        qt = attention_map(ft.detach(), p)  # (batch, H, W)
        if fs.ndim == 4 and fs.shape[2:] != qt.shape[1:]:
            fs = F.interpolate(fs, size=qt.shape[1:], mode="bilinear", align_corners=False)
        terms.append((attention_map(fs, p) - qt).flatten(1).norm(dim=1).mean())
    at = torch.stack(terms).sum()
    return LossTerms(total=at, parts={"attention": at})


_COINCIDENT = 1e-6  # samples closer than this count as the same point (identical views happen)


def _pairwise_distances(e: torch.Tensor) -> torch.Tensor:
    """(batch, D) -> (batch, batch) Euclidean distances, divided by their mean over distinct pairs.

    Coincident samples get distance 0 with no gradient (the square root has none to give there)."""
    squared = (e[:, None, :] - e[None, :, :]).pow(2).sum(2)  # (batch, batch)
    apart = squared.detach() > _COINCIDENT**2
    d = torch.where(apart, squared.clamp_min(_COINCIDENT**2).sqrt(), torch.zeros_like(squared))
    off_diagonal = ~torch.eye(len(e), dtype=torch.bool, device=e.device)
    return d / d[off_diagonal].mean().clamp_min(1e-12)


def _angles(e: torch.Tensor) -> torch.Tensor:
    """(batch, D) -> (batch, batch, batch): cos of the angle at j between i and k, for all triplets.

    A direction to a coincident sample is undefined; it is taken as zero, with no gradient."""
    diff = e[None, :, :] - e[:, None, :]  # (batch, batch, D): j - i
    norm = diff.pow(2).sum(2, keepdim=True).clamp_min(_COINCIDENT**2).sqrt()  # (batch, batch, 1)
    unit = torch.where(norm.detach() > _COINCIDENT, diff / norm, torch.zeros_like(diff))
    return torch.bmm(unit, unit.transpose(1, 2))


@FEATURE_LOSSES.register("relational")
def relational_loss(
    student: list[torch.Tensor], teacher: list[torch.Tensor], distance_weight: float = 25.0, angle_weight: float = 50.0
) -> LossTerms:
    """Relational KD (Park, Kim, Lu, Cho 2019): Huber loss between the students' and the teacher's
    mean-normalised pairwise distances (RKD-D) and triplet angles (RKD-A) of the embeddings.

    Embeddings of any layer are flattened per sample; weights are the paper's (25, 50)."""
    distance = angle = student[0].new_zeros(())
    for fs, ft in zip(student, teacher, strict=True):
        es, et = fs.flatten(1), ft.detach().flatten(1)  # (batch, D)
        distance = distance + F.smooth_l1_loss(_pairwise_distances(es), _pairwise_distances(et))
        angle = angle + F.smooth_l1_loss(_angles(es), _angles(et))
    parts = {"rkd_distance": distance_weight * distance, "rkd_angle": angle_weight * angle}
    return LossTerms(total=parts["rkd_distance"] + parts["rkd_angle"], parts=parts)


def _relation_matrix(e: torch.Tensor) -> torch.Tensor:
    """(batch, D) -> (batch, batch) squared Euclidean distances between the instances, divided by their
    largest (so the matrix lies in [0, 1] whatever the layer's scale)."""
    squared = (e[:, None, :] - e[None, :, :]).pow(2).sum(2)
    return squared / squared.detach().max().clamp_min(1e-12)


def _matched(a: torch.Tensor, width: int) -> torch.Tensor:
    """(batch, D) -> (batch, width) by averaging adjacent entries (adaptive average pooling over the feature
    axis): two layers' instance features brought to one length, as IRG pools them before comparing."""
    if a.shape[1] == width:
        return a
    return F.adaptive_avg_pool1d(a[:, None, :], width)[:, 0, :]


def _transformation(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """(batch,) squared distance of each instance's features from one layer to the next (the longer one pooled
    to the shorter one's length), divided by the batch's largest."""
    width = min(lower.shape[1], upper.shape[1])
    moved = (_matched(lower, width) - _matched(upper, width)).pow(2).sum(1)
    return moved / moved.detach().max().clamp_min(1e-12)


@FEATURE_LOSSES.register("irg")
def irg_loss(
    student: list[torch.Tensor],
    teacher: list[torch.Tensor],
    vertex_weight: float = 0.1,
    edge_weight: float = 5.0,
    transformation_weight: float = 5.0,
) -> LossTerms:
    """Instance relationship graph (Liu, Cao, Li, Yuan, Hu, Li, Duan, CVPR 2019, "Knowledge Distillation via
    Instance Relationship Graph"). A layer's IRG over the batch has the instances' features as vertices and
    their distances as edges; the IRG transformation is how each instance moves from one layer to the next.

        L_IRG = w_V ||v_S^L - v_T^L||^2                         vertex: the last listed layers (equal widths)
              + w_E mean_l ||A_S^l - A_T^l||^2                  edge: A^l_ij = ||f_i^l - f_j^l||^2 / max_ij
              + w_T mean_l ||L_S^(l,l+1) - L_T^(l,l+1)||^2      transformation: L_i = ||f_i^l - f_i^(l+1)||^2 / max_i

    each ||.||^2 a mean over its entries. Edges are batch x batch, so the student's and the teacher's layers
    may differ in width; for the transformation, a layer's features are average-pooled to the other's length.
    With one layer pair there is no transformation part. The teacher side is detached.
    """
    es = [f.flatten(1) for f in student]
    et = [f.detach().flatten(1) for f in teacher]
    if es[-1].shape[1] != et[-1].shape[1]:
        raise ConfigError(
            f"irg: the vertex part compares the last listed layers, which must have the same width "
            f"(student {es[-1].shape[1]}, teacher {et[-1].shape[1]}); list the logits layers last"
        )
    vertex = F.mse_loss(es[-1], et[-1])
    edge = sum(F.mse_loss(_relation_matrix(s), _relation_matrix(t)) for s, t in zip(es, et, strict=True)) / len(es)
    if len(es) > 1:
        pairs = list(zip(es[:-1], es[1:], et[:-1], et[1:], strict=True))
        tran = sum(F.mse_loss(_transformation(a, b), _transformation(c, d)) for a, b, c, d in pairs) / len(pairs)
    else:
        tran = vertex.new_zeros(())
    parts = {"irg_vertex": vertex_weight * vertex, "irg_edge": edge_weight * edge,
             "irg_transformation": transformation_weight * tran}  # fmt: skip
    return LossTerms(total=parts["irg_vertex"] + parts["irg_edge"] + parts["irg_transformation"], parts=parts)


# What each loss needs of a teacher feature, per sample; computed once over the transfer views.
TEACHER_SIDE = {
    "hint": lambda f: f,
    "attention": attention_map,
    "relational": lambda f: f.flatten(1),
    "irg": lambda f: f.flatten(1),
}


# --- the terms' schemas (distill.terms entries) ------------------------------------------------------


class FeatureTerm(Term):
    """A loss on intermediate features: module paths of the student's and the teacher's layers, paired."""

    student_layers: list[str] = Field(min_length=1, description="Module paths in the student, e.g. features.2.")
    teacher_layers: list[str] = Field(min_length=1, description="Module paths in the teacher, one per student layer.")
    teacher: str | None = Field(default=None, description="Which teacher's features (default: the first listed).")
    feature: ClassVar[bool] = True

    @model_validator(mode="after")
    def _paired(self) -> FeatureTerm:
        if len(self.student_layers) != len(self.teacher_layers):
            raise ValueError(
                f"student_layers ({len(self.student_layers)}) and teacher_layers ({len(self.teacher_layers)}) "
                "must pair up one to one"
            )
        return self


@TERMS.register("hint")
class HintTerm(FeatureTerm):
    """FitNets (Romero et al. 2015) through a learned regressor."""

    name: Literal["hint"]


@TERMS.register("attention")
class AttentionTerm(FeatureTerm):
    """Attention transfer (Zagoruyko & Komodakis 2017) on conv feature maps."""

    name: Literal["attention"]
    p: PositiveFloat = 2.0


@TERMS.register("relational")
class RelationalTerm(FeatureTerm):
    """Relational KD (Park et al. 2019): distances and angles within the batch."""

    name: Literal["relational"]
    distance_weight: NonNegativeFloat = 25.0
    angle_weight: NonNegativeFloat = 50.0


@TERMS.register("irg")
class IRGTerm(FeatureTerm):
    """Instance relationship graph (Liu et al. 2019): vertices, edges and their transformation across the
    listed layers; the last pair (the logits) must have equal widths."""

    name: Literal["irg"]
    vertex_weight: NonNegativeFloat = 0.1
    edge_weight: NonNegativeFloat = 5.0
    transformation_weight: NonNegativeFloat = 5.0
