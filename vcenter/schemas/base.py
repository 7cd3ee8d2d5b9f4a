"""The families every schema belongs to: what a client sends (RequestModel: unknown fields
refused, NaN and Infinity refused: JSON parsers read them, but they are not numbers to us) and
what the server answers (ResponseModel: read from the ORM objects' attributes); both, and the
schemas that are neither, are ExampleModels (vcenter.core.examples): their JSON schema gives
every field an example."""

from __future__ import annotations

from pydantic import ConfigDict

from vcenter.core.examples import ExampleModel

__all__ = ["ExampleModel", "RequestModel", "ResponseModel"]


class RequestModel(ExampleModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ResponseModel(ExampleModel):
    model_config = ConfigDict(from_attributes=True)
