"""The distilled student's objective: a weighted sum of registered losses.

    L = sum_i w_i * L_i       e.g. 0.5 * CE + 0.5 * KD, or CE + KD + 0.1 * hint

Response terms (ce, kd, dkd) read the student's logits and the teacher's cached logits. Feature
terms (hint, attention, relational, irg) read named layers: the student's through forward hooks during
training, the teacher's precomputed once over all transfer views (`teacher_targets`), so the
teacher never runs inside the training loop. Layer names are checked when the objective is
attached to the models, before any training.

Terms come as plain dicts (`{"name": "kd", "weight": 0.5, ...}`, as distill.terms holds them); each is
read through its registered schema (`TERMS`), which says what the loss needs (the temperature, layers)
and validates the term's own keys.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from kdcore.errors import ConfigError
from kdcore.inference import render_budget, rows_per_pass
from kdcore.losses import LOSSES, TERMS, LossTerms
from kdcore.losses.features import FEATURE_LOSSES, TEACHER_SIDE, FeatureTaps, HintRegressor, attention_map
from kdcore.transfer.views import Views

MAX_TARGET_BYTES = 4 * 2**30  # precomputed teacher features larger than this are refused


def _add_parts(parts: dict[str, torch.Tensor], terms: LossTerms, weight: float) -> torch.Tensor:
    """Adds a term's weighted parts into `parts` (same names add up); returns its weighted total."""
    for part, value in terms.parts.items():
        parts[part] = parts.get(part, 0) + weight * value
    return weight * terms.total


class StudentWithAux(nn.Module):
    """The student plus the objective's own trainable parts (hint regressors), trained together;
    only `student` is kept afterwards."""

    def __init__(self, student: nn.Module, aux: nn.ModuleDict) -> None:
        super().__init__()
        self.student = student
        self.aux = aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)


class Objective:
    """Callable as a training loss: (student logits, batch) -> LossTerms, parts named per term."""

    def __init__(self, terms: list[dict[str, Any]], temperature: float) -> None:
        if not terms:
            raise ConfigError("distill.terms: at least one term is needed")
        self.terms = [dict(t) for t in terms]
        self.temperature = temperature
        self._response: list[tuple[str, float, Callable[..., LossTerms]]] = []
        self._features: list[dict[str, Any]] = []
        for i, term in enumerate(self.terms):
            name = term.get("name")
            if name not in TERMS:
                raise ConfigError(f"distill.terms[{i}]: unknown term {name!r}; known: {', '.join(TERMS.names())}")
            schema = TERMS.get(name).model_validate(term, strict=False)
            weight = schema.weight
            if schema.feature:
                layout = ("student_layers", "teacher_layers", "teacher")
                options = {k: v for k, v in schema.loss_options(temperature).items() if k not in layout}
                self._features.append({"index": i, **schema.model_dump(), "weight": weight, "options": options})
                continue
            self._response.append((name, weight, partial(LOSSES.get(name), **schema.loss_options(temperature))))
        self._student_taps: FeatureTaps | None = None
        self._aux: nn.ModuleDict | None = None

    @property
    def needs_teacher_features(self) -> bool:
        return bool(self._features)

    @property
    def feature_teacher(self) -> str | None:
        """The teacher named by the feature terms (None: the first teacher). All must agree."""
        named = {t.get("teacher") for t in self._features}
        if len(named) > 1:
            raise ConfigError(
                f"distill.terms: feature terms take features from different teachers {sorted(map(str, named))}; use one"
            )
        return next(iter(named), None)

    def _key(self, term: dict[str, Any], j: int) -> str:
        return f"feat{term['index']}_{j}"

    def check_layers(self, student: nn.Module, teacher: nn.Module) -> None:
        """Fails with the valid names if any layer is unknown; nothing is trained before this passes."""
        for term in self._features:
            FeatureTaps(student, term["student_layers"], role=f"student ({term['name']} term)").close()
            FeatureTaps(teacher, term["teacher_layers"], role=f"teacher ({term['name']} term)").close()
            if term["name"] == "irg":  # its vertex part compares the last layers' outputs one to one
                last = dict(student.named_modules())[term["student_layers"][-1]]
                other = dict(teacher.named_modules())[term["teacher_layers"][-1]]
                widths = getattr(last, "out_features", None), getattr(other, "out_features", None)
                if None not in widths and widths[0] != widths[1]:
                    raise ConfigError(
                        f"distill.terms[{term['index']}] (irg): the last layers {term['student_layers'][-1]} and "
                        f"{term['teacher_layers'][-1]} give {widths[0]} and {widths[1]} values; the vertex part "
                        "needs equal widths: list the logits layers last"
                    )

    def teacher_targets(
        self,
        teacher: nn.Module,
        images: torch.Tensor,
        views: Views,
        fill: torch.Tensor,
        device: torch.device,
        chunk: int = 1024,
    ) -> dict[str, torch.Tensor]:
        """Per view (as `views` renders it), what each feature term needs of the teacher (TEACHER_SIDE)."""
        if not self._features:
            return {}
        layers = sorted({name for term in self._features for name in term["teacher_layers"]})
        teacher = teacher.to(device).eval()
        parts: dict[str, list[torch.Tensor]] = {}
        total = len(views.src)
        chunk = rows_per_pass(tuple(images.shape[1:]), chunk, render_budget())
        with FeatureTaps(teacher, layers, role="teacher") as taps, torch.no_grad():
            for first in tqdm(range(0, total, chunk), desc="teacher features", unit="chunk", mininterval=1.0):
                sl = slice(first, first + chunk)
                teacher(views.render(images, sl, fill).to(device))
                for term in self._features:
                    for j, layer in enumerate(term["teacher_layers"]):
                        feature = taps.outputs[layer]
                        if term["name"] == "attention":
                            target = attention_map(feature, term["options"].get("p", 2.0))
                        else:
                            target = TEACHER_SIDE[term["name"]](feature)
                        parts.setdefault(self._key(term, j), []).append(target.float().cpu())
                if first == 0:
                    per_view = sum(p[0][0].numel() * 4 for p in parts.values())
                    if per_view * total > MAX_TARGET_BYTES:
                        raise ConfigError(
                            f"distill.terms: the teacher features of {', '.join(layers)} would take "
                            f"{per_view * total / 2**30:.1f} GiB for {total} views; use a smaller or later layer"
                        )
        return {key: torch.cat(chunks) for key, chunks in parts.items()}

    def attach(self, student: nn.Module, targets: dict[str, torch.Tensor], sample: torch.Tensor) -> nn.Module:
        """Hooks the student's layers, builds hint regressors from the feature shapes, and returns
        the module to train (the student itself when no term has parameters)."""
        if not self._features:
            return student
        names = sorted({name for term in self._features for name in term["student_layers"]})
        self._student_taps = FeatureTaps(student, names, role="student")
        was_training = student.training
        student.eval()
        with torch.no_grad():
            student(sample[:2])
        student.train(was_training)
        self._aux = nn.ModuleDict()
        for term in self._features:
            if term["name"] != "hint":
                continue
            regressors = nn.ModuleList()
            for j, layer in enumerate(term["student_layers"]):
                s_shape = tuple(self._student_taps.outputs[layer].shape[1:])
                t_shape = tuple(targets[self._key(term, j)].shape[1:])
                regressors.append(HintRegressor(s_shape, t_shape))
            self._aux[f"hint{term['index']}"] = regressors
        return StudentWithAux(student, self._aux) if len(self._aux) else student

    def detach(self) -> None:
        """Removes the student's hooks (before the student is saved or evaluated elsewhere)."""
        if self._student_taps is not None:
            self._student_taps.close()
            self._student_taps = None

    def __call__(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> LossTerms:
        total = logits.new_zeros(())
        parts: dict[str, torch.Tensor] = {}
        for _name, weight, fn in self._response:
            total = total + _add_parts(parts, fn(logits, batch), weight)
        for term in self._features:
            if self._student_taps is None:
                raise RuntimeError("feature terms need Objective.attach(student, ...) before training")
            student = [self._student_taps.outputs[layer] for layer in term["student_layers"]]
            teacher = [batch[self._key(term, j)] for j in range(len(term["teacher_layers"]))]
            options = dict(term["options"])
            if term["name"] == "hint":
                options["regressors"] = self._aux[f"hint{term['index']}"]
            terms = FEATURE_LOSSES.get(term["name"])(student, teacher, **options)
            total = total + _add_parts(parts, terms, term["weight"])
        return LossTerms(total=total, parts=parts)
