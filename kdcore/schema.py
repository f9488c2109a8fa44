"""The base of every params section: frozen, strict, no unknown key.

The config sections (kdcore/config/) derive from `Section`; each loss term's schema derives from
`Term` and lives beside its loss (kdcore/losses/), registered in `TERMS`, so a new loss is one
module: the loss, its schema, their registrations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, Strict


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


# a path is written as a string in YAML: the one lax conversion
FilePath = Annotated[Path, Strict(False)]


class Term(Section):
    """One weighted term of distill.terms; `name` (a Literal in each subclass) selects it."""

    weight: NonNegativeFloat = Field(default=1.0, description="Multiplies this term in the sum.")

    feature: ClassVar[bool] = False  # reads intermediate layers of student and teacher, not only logits
    uses_temperature: ClassVar[bool] = False  # the loss takes distill.temperature
    fixed_options: ClassVar[dict[str, Any]] = {}  # keyword arguments the loss always gets as a term

    def loss_options(self, temperature: float) -> dict[str, Any]:
        """The loss function's keyword arguments for this term (its own keys, T where it takes one)."""
        options = self.model_dump(exclude={"name", "weight"})
        if self.uses_temperature:
            options["temperature"] = temperature
        return {**options, **self.fixed_options}
