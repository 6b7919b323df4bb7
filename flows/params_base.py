"""The base of every params.yaml section model: unknown keys are errors, and settings never change after start-up."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
