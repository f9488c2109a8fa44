"""A class-balanced exemplar memory of fixed budget: the replay buffer of lifelong updates.

The budget M is shared equally by the classes seen so far (M // K each, the remainder to the lowest
class indices), so old classes give up exemplars as new ones arrive and the memory never grows.
Two ways to choose a class's exemplars:

- `reservoir`: a uniform random sample of every sample of the class seen so far, kept up to date one
  sample at a time (Vitter 1985, algorithm R), so a class's old and new data are equally likely to
  stay; shrinking a class keeps a uniform random subset of it.
- `herding`: iCaRL's choice (Rebuffi et al. 2017, "iCaRL: Incremental Classifier and Representation
  Learning"; Welling 2009): with phi the model's L2-normalised features and mu the class mean,
  exemplar k is argmin_x || mu - (phi(x) + sum_{i<k} phi(p_i)) / k ||, chosen greedily from the
  class's candidates (its current exemplars and its new samples), so the first k exemplars' mean
  approximates the class mean best; shrinking keeps the first exemplars.

The memory is a versioned artifact: `tensors()` gives x, y, task and the reservoir counts, stored
as safetensors by the update stage.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from kdcore.errors import ConfigError

SELECTIONS = ("reservoir", "herding")
Features = Callable[[torch.Tensor], torch.Tensor]  # (N, C, H, W) -> (N, D)


def herding_order(features: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of `count` rows of `features` (N, D) in iCaRL herding order."""
    phi = torch.nn.functional.normalize(features.double(), dim=1)
    mu = phi.mean(0)
    chosen: list[int] = []
    running = torch.zeros_like(mu)
    available = torch.ones(len(phi), dtype=torch.bool)
    for k in range(1, min(count, len(phi)) + 1):
        distance = ((mu - (running + phi) / k) ** 2).sum(1)
        distance[~available] = float("inf")
        best = int(distance.argmin())
        chosen.append(best)
        available[best] = False
        running += phi[best]
    return torch.tensor(chosen, dtype=torch.long)


class ExemplarMemory:
    def __init__(self, budget: int, selection: str = "herding", seed: int = 0) -> None:
        if budget < 0:
            raise ConfigError(f"lifelong.memory must be >= 0, got {budget}")
        if selection not in SELECTIONS:
            raise ConfigError(f"lifelong.selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
        self.budget = budget
        self.selection = selection
        self.generator = torch.Generator().manual_seed(seed)
        self.x: torch.Tensor | None = None
        self.y = torch.zeros(0, dtype=torch.long)
        self.task = torch.zeros(0, dtype=torch.long)
        self.seen: dict[int, int] = {}  # samples of each class seen so far (reservoir)

    def __len__(self) -> int:
        return len(self.y)

    def quotas(self, classes: list[int]) -> dict[int, int]:
        base, extra = divmod(self.budget, len(classes)) if classes else (0, 0)
        return {c: base + (1 if i < extra else 0) for i, c in enumerate(sorted(classes))}

    def update(self, x: torch.Tensor, y: torch.Tensor, task: int, features: Features | None = None) -> None:
        """Adds an increment's samples: every class seen so far keeps its quota of exemplars."""
        if self.budget == 0:
            return
        if self.x is None:
            self.x = x[:0].clone()
        classes = sorted(set(self.y.tolist()) | set(y.tolist()))
        quotas = self.quotas(classes)
        xs, ys, tasks = [], [], []
        for c in classes:
            old = self.y == c
            new = y == c
            cand_x = torch.cat([self.x[old], x[new]])
            cand_task = torch.cat([self.task[old], torch.full((int(new.sum()),), task, dtype=torch.long)])
            if self.selection == "reservoir":
                keep = self._reservoir(c, int(old.sum()), int(new.sum()), quotas[c])
            else:
                if features is None:
                    raise ValueError("herding needs the model's features")
                keep = herding_order(features(cand_x), quotas[c])
            xs.append(cand_x[keep])
            ys.append(torch.full((len(keep),), c, dtype=torch.long))
            tasks.append(cand_task[keep])
        self.x, self.y, self.task = torch.cat(xs), torch.cat(ys), torch.cat(tasks)

    def _reservoir(self, c: int, kept: int, arriving: int, quota: int) -> torch.Tensor:
        """Algorithm R over the class's stream: indices into [kept exemplars, arriving samples]."""
        seen = self.seen.get(c, 0)
        slots = list(range(kept))
        capacity = max(quota, kept)  # the old quota; shrunk below
        for i in range(arriving):
            seen += 1
            if len(slots) < capacity:
                slots.append(kept + i)
            else:
                j = int(torch.randint(seen, (1,), generator=self.generator))
                if j < capacity:
                    slots[j] = kept + i
        self.seen[c] = seen
        if len(slots) > quota:  # a uniform random subset of a uniform sample is uniform
            pick = torch.randperm(len(slots), generator=self.generator)[:quota].sort().values
            slots = [slots[int(i)] for i in pick]
        return torch.tensor(slots, dtype=torch.long)

    def class_counts(self) -> dict[int, int]:
        return {int(c): int((self.y == c).sum()) for c in self.y.unique()}

    def tensors(self) -> dict[str, torch.Tensor]:
        x = self.x if self.x is not None else torch.zeros(0)
        classes = sorted(self.seen)
        return {
            "x": x.contiguous(),
            "y": self.y.contiguous(),
            "task": self.task.contiguous(),
            "seen_classes": torch.tensor(classes, dtype=torch.long),
            "seen_counts": torch.tensor([self.seen[c] for c in classes], dtype=torch.long),
        }
