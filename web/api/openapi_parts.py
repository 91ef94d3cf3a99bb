"""The pieces every part of the OpenAPI document is built from.

Each blueprint that serves API routes adds its own paths and schemas to the one
document (`web/api/openapi.py` assembles it); these helpers keep them spelled
the same way everywhere: schemas from the pydantic models the routes use, `$ref`
bodies, and error answers that all carry `ErrorOut` with a description saying
what the status means for that route.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel

REF = "#/components/schemas/{model}"

Mode = Literal["validation", "serialization"]


def add_schemas(
    document: dict[str, Any],
    models: Iterable[type[BaseModel]],
    mode: Callable[[type[BaseModel]], Mode],
) -> None:
    """Put each model's JSON Schema (and the schemas it refers to) in `document`.

    `mode` says how a model is used: "validation" for request bodies,
    "serialization" for answers (pydantic's two schemas differ for defaults).
    """
    schemas = document["components"]["schemas"]
    for model in models:
        schema = model.model_json_schema(ref_template=REF, mode=mode(model))
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema


def json_content(model_name: str) -> dict[str, Any]:
    """A JSON body whose schema is the named component."""
    return {"application/json": {"schema": {"$ref": REF.format(model=model_name)}}}


def error_responses(descriptions: Mapping[int, str], *statuses: int) -> dict[str, Any]:
    """Error answers for `statuses`, each an `ErrorOut` with the route's description of it."""
    return {
        str(status): {"description": descriptions[status], "content": json_content("ErrorOut")}
        for status in statuses
    }
