"""How the OpenAPI document spells a reference to a schema (`web.api.operations` builds it).

Schemas are named after the pydantic models they come from and referred to as
`#/components/schemas/<Model>`; `Mode` says which of pydantic's two schemas a
model contributes ("validation" for request bodies, "serialization" for answers:
they differ for fields with defaults).
"""

from __future__ import annotations

from typing import Any, Literal

REF = "#/components/schemas/{model}"

Mode = Literal["validation", "serialization"]


def json_content(model_name: str) -> dict[str, Any]:
    """A JSON body whose schema is the named component."""
    return {"application/json": {"schema": {"$ref": REF.format(model=model_name)}}}
