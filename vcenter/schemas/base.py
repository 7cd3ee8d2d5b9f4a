"""The two families every schema belongs to: what a client sends (RequestModel: unknown fields
refused, NaN and Infinity refused: JSON parsers read them, but they are not numbers to us) and
what the server answers (ResponseModel: read from the ORM objects' attributes)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)
