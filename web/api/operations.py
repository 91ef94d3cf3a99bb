"""API operations: one decorator registers a route and says what it takes and answers.

`GET /api/v1/openapi.json` is generated from the app's URL map: every rule under
/api/v1 is looked up in `app.view_functions`, and the metadata `operation`
recorded on that view becomes the OpenAPI operation; its pydantic models become
the schemas. Nothing else lists paths, so a route cannot be served without
being described, nor described without being served: `undocumented(app)` names
any rule + method served without this decorator, and tests/integration/
test_api_document.py fails on it.

How to add an operation (the whole recipe)::

    # web/api/widgets.py
    from web.api.common import ApiError, bp, parse_body, parse_query
    from web.api.operations import Query, operation

    @operation(
        "PATCH",
        "/widgets/<int:widget_id>",  # relative to /api/v1, Flask converters typed
        summary="Rename a widget",
        body=WidgetUpdate,  # a pydantic model: validated with parse_body(WidgetUpdate)
        response=WidgetOut,  # the 200 answer (status=201 for a create)
        errors={409: "Another widget has that name"},  # beyond the automatic ones
    )
    def update_widget(widget_id: int) -> ResponseReturnValue: ...

    then add `widgets` to the imports and `RESOURCES` in web/api/resources.py
    (a module with a blueprint of its own passes `blueprint=` and registers
    that blueprint in create_app, like web/connect/api.py).

- The bearer token is checked by the decorator (do not add `@require_token`);
  `public=True` for a route a third party calls without one (`security: []`).
- Automatic error answers, each an `ErrorOut`: 401 unless public; 404 when the
  path has parameters (another team's id answers 404 too); 400, 413, 415 and
  422 with a JSON body; 413 and 422 with a `form` body; 422 with query
  parameters (unless public). `errors` adds others or rewords these (`{404: "No host set"}`).
- Query parameters: a list of `Query` (integers by default, read with
  `common.int_arg`) or a pydantic model (read with `common.parse_query`). Any
  query parameter the operation does not list is refused with a 422
  (web/api/openapi.py, from the generated document), as an unknown body field is.
- Other successful answers (a 201 and a 200 from one route, a 303, a 204):
  `answers=[Answer(201, WidgetOut, "Created"), ...]`.
- One method per decorated function: the function's name is the endpoint.

Must never: serve a route under /api/v1 that the document leaves out, or guess
an operation's shape from its code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from flask import Blueprint, Flask, current_app
from flask.typing import ResponseReturnValue
from pydantic import BaseModel
from werkzeug.routing import Rule, UUIDConverter
from werkzeug.routing.converters import NumberConverter

from web.api.common import API_PREFIX, bp, require_token
from web.api.openapi_parts import REF, Mode, json_content
from web.api.schemas import MAX_ID, ErrorOut

F = TypeVar("F", bound=Callable[..., ResponseReturnValue])
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]

# What each error status means when the route does not say more.
ERROR_TEXT: dict[int, str] = {
    400: "Body is not valid JSON",
    401: "Missing or unknown API token",
    403: "Not allowed",
    404: "Not found (or not your team's)",
    409: "Conflicts with existing state",
    413: "Body over the size limit",
    415: "Body is not JSON",
    422: "Invalid field (named in error.fields)",
    502: "An upstream service is unreachable",
    503: "An upstream service is unavailable",
}
_ATTRIBUTE = "api_operations"


@dataclass(frozen=True)
class Query:
    """One query parameter; an integer in [minimum, maximum] unless `schema` says otherwise."""

    name: str
    minimum: int = 1
    maximum: int = MAX_ID
    required: bool = False
    description: str | None = None
    schema: Mapping[str, Any] | None = None

    def parameter(self) -> dict[str, Any]:
        schema = dict(self.schema or {"type": "integer", "minimum": self.minimum})
        if self.schema is None:
            schema["maximum"] = self.maximum
        out: dict[str, Any] = {
            "name": self.name,
            "in": "query",
            "required": self.required,
            "schema": schema,
        }
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class Answer:
    """A successful (or otherwise not-`ErrorOut`) answer: status, body model, what it means.

    `any_of`: other models the body may be instead of `model`; `schema`: a raw
    JSON Schema for a body no model describes; `json=False` for an answer
    without a JSON body (a redirect, a page).
    """

    status: int
    model: type[BaseModel] | None = None
    description: str = "OK"
    schema: Mapping[str, Any] | None = None
    json: bool = True
    any_of: tuple[type[BaseModel], ...] = ()

    def models(self) -> tuple[type[BaseModel], ...]:
        return (self.model, *self.any_of) if self.model is not None else self.any_of

    def response(self) -> dict[str, Any]:
        out: dict[str, Any] = {"description": self.description}
        if self.any_of:
            refs = [{"$ref": REF.format(model=m.__name__)} for m in self.models()]
            out["content"] = {"application/json": {"schema": {"anyOf": refs}}}
        elif self.model is not None:
            out["content"] = json_content(self.model.__name__)
        elif self.schema is not None and self.json:
            out["content"] = {"application/json": {"schema": dict(self.schema)}}
        return out


@dataclass(frozen=True)
class Operation:
    """What `operation` records on a view, per method; `document_operation` renders it."""

    method: str
    summary: str
    description: str | None = None
    body: type[BaseModel] | None = None
    body_required: bool = True
    form: Mapping[str, Any] | None = None
    answers: tuple[Answer, ...] = ()
    errors: Mapping[int, str] = field(default_factory=dict)
    query: tuple[Query, ...] = ()
    query_model: type[BaseModel] | None = None
    path_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    public: bool = False

    def models(self) -> Iterable[tuple[type[BaseModel], Mode]]:
        if self.body is not None:
            yield self.body, "validation"
        for answer in self.answers:
            for model in answer.models():
                yield model, "serialization"

    def query_parameters(self) -> list[dict[str, Any]]:
        if self.query_model is None:
            return [q.parameter() for q in self.query]
        schema = self.query_model.model_json_schema(mode="validation")
        required = set(schema.get("required", []))
        out = []
        for name, given in schema.get("properties", {}).items():
            prop = {k: v for k, v in given.items() if k != "title"}
            parameter: dict[str, Any] = {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": prop,
            }
            if "description" in prop:
                parameter["description"] = prop.pop("description")
            out.append(parameter)
        return out


def operation(
    method: Method,
    path: str,
    *,
    summary: str,
    description: str | None = None,
    body: type[BaseModel] | None = None,
    body_required: bool = True,
    form: Mapping[str, Any] | None = None,
    response: type[BaseModel] | None = None,
    status: int = 200,
    response_description: str | None = None,
    answers: Sequence[Answer] = (),
    errors: Mapping[int, str] | Iterable[int] = (),
    query: Sequence[Query] | type[BaseModel] = (),
    path_params: Mapping[str, Mapping[str, Any]] | None = None,
    public: bool = False,
    blueprint: Blueprint | None = None,
) -> Callable[[F], F]:
    """Register the decorated view for `method` `path` (under /api/v1) and describe it.

    Args:
        body: the JSON body's model; `form`: a multipart body's JSON Schema instead.
        response, status: the main answer; `status=204` with no `response` for none.
        answers: more answers, or answers that are not `response`'s.
        errors: statuses (described from ERROR_TEXT) or status → this route's meaning.
        query: `Query` list, or a pydantic model of the query string.
        path_params: a JSON Schema per path parameter, where the converter's is not enough.
        public: no token (third-party callers); its query parameters are not policed.
        blueprint: the API blueprint (`web.api.common.bp`) unless the route has its own.

    Raises:
        ValueError: at import, for a method the decorator does not serve.
    """
    if method not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        raise ValueError(f"method: {method} is not an API method")
    if body is not None and form is not None:
        raise ValueError("body: give a JSON body model or a form schema, not both")
    main: list[Answer] = []
    if response is not None or status == 204 or not answers:
        text = response_description or ("No content" if status == 204 else "OK")
        main.append(Answer(status, response, text, json=status != 204))
    described = dict(errors) if isinstance(errors, Mapping) else dict.fromkeys(errors, "")
    query_model = query if isinstance(query, type) else None
    record = Operation(
        method=method,
        summary=summary,
        description=description,
        body=body,
        body_required=body_required,
        form=form,
        answers=(*main, *answers),
        errors=_error_texts(described, body, form, path, public, bool(query)),
        query=() if isinstance(query, type) else tuple(query),
        query_model=query_model,
        path_params=dict(path_params or {}),
        public=public,
    )

    def register(view: F) -> F:
        served = view if public or getattr(view, "requires_token", False) else require_token(view)
        operations = dict(getattr(served, _ATTRIBUTE, {}))
        operations[method] = record
        setattr(served, _ATTRIBUTE, operations)
        (blueprint or bp).add_url_rule(
            path, endpoint=view.__name__, view_func=served, methods=[method]
        )
        return served

    return register


def _error_texts(
    given: Mapping[int, str],
    body: type[BaseModel] | None,
    form: Mapping[str, Any] | None,
    path: str,
    public: bool,
    has_query: bool,
) -> dict[int, str]:
    statuses = set(given)
    if not public:
        statuses.add(401)
    if "<" in path:
        statuses.add(404)
    if body is not None:
        statuses.update((400, 413, 415, 422))
    if form is not None:
        statuses.update((413, 422))
    if has_query and not public:  # a public route's callers add parameters of their own
        statuses.add(422)
    return {s: given.get(s) or ERROR_TEXT[s] for s in sorted(statuses)}


def openapi_path(rule: str) -> str:
    """`/api/v1/mailboxes/<int:mailbox_id>` → `/mailboxes/{mailbox_id}`."""
    path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.removeprefix(API_PREFIX))
    return path or "/"


def api_rules(app: Flask) -> Iterable[tuple[Rule, str]]:
    """Each (rule, method) the app serves under /api/v1, HEAD and OPTIONS aside."""
    for rule in app.url_map.iter_rules():
        if rule.rule == API_PREFIX or rule.rule.startswith(f"{API_PREFIX}/"):
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                yield rule, method


def recorded(app: Flask, rule: Rule, method: str) -> Operation | None:
    """The operation `operation` recorded for this rule and method, if it was used."""
    view = app.view_functions.get(rule.endpoint)
    operations: Mapping[str, Operation] = getattr(view, _ATTRIBUTE, {})
    return operations.get(method)


def undocumented(app: Flask) -> list[str]:
    """`METHOD /api/v1/...` for each route served without the decorator (so undescribed)."""
    return [
        f"{method} {rule.rule}"
        for rule, method in api_rules(app)
        if recorded(app, rule, method) is None
    ]


def _path_parameter(rule: Rule, name: str, given: Mapping[str, Any] | None) -> dict[str, Any]:
    converter = rule._converters.get(name)  # Werkzeug keeps the converters nowhere public
    schema: dict[str, Any]
    if given is not None:
        schema = dict(given)
    elif isinstance(converter, NumberConverter):
        low = converter.min if converter.min is not None else (1 if name.endswith("id") else 0)
        schema = {"type": "integer", "minimum": low}
        schema["maximum"] = converter.max if converter.max is not None else MAX_ID
    elif isinstance(converter, UUIDConverter):
        schema = {"type": "string", "format": "uuid"}
    else:
        schema = {"type": "string", "minLength": 1, "pattern": "^[^/]+$"}
    return {"name": name, "in": "path", "required": True, "schema": schema}


def document_operation(rule: Rule, op: Operation) -> dict[str, Any]:
    """The OpenAPI operation object for `op` served at `rule`."""
    out: dict[str, Any] = {"summary": op.summary}
    if op.description:
        out["description"] = op.description
    if op.public:
        out["security"] = []
    parameters = [
        _path_parameter(rule, name, op.path_params.get(name))
        for name in re.findall(r"<(?:[^:<>]+:)?([^<>]+)>", rule.rule)
    ]
    parameters += op.query_parameters()
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        out["requestBody"] = {
            "required": op.body_required,
            "content": json_content(op.body.__name__),
        }
    elif op.form is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"multipart/form-data": {"schema": dict(op.form)}},
        }
    responses: dict[str, Any] = {
        str(status): {"description": text, "content": json_content(ErrorOut.__name__)}
        for status, text in op.errors.items()
    }
    for answer in op.answers:
        responses[str(answer.status)] = answer.response()
    out["responses"] = dict(sorted(responses.items()))
    return out


def build_document(app: Flask | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every operation `app` (default: the current one) serves."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    paths: dict[str, dict[str, Any]] = {}
    models: dict[str, tuple[type[BaseModel], Mode]] = {"ErrorOut": (ErrorOut, "serialization")}
    for rule, method in api_rules(app):
        op = recorded(app, rule, method)
        if op is None:
            continue  # undocumented(app) names it; the document test fails on it
        paths.setdefault(openapi_path(rule.rule), {})[method.lower()] = document_operation(rule, op)
        for model, mode in op.models():
            seen = models.setdefault(model.__name__, (model, mode))
            if seen[0] is not model:
                raise ValueError(
                    f"two models are named {model.__name__} ({seen[0].__module__}, "
                    f"{model.__module__}): schema names must be unique"
                )
    schemas: dict[str, Any] = {}
    for name, (model, mode) in sorted(models.items()):
        schema = model.model_json_schema(ref_template=REF, mode=mode)
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    return {
        "openapi": "3.1.0",
        "info": {"title": "Sightline API", "version": "1"},
        "servers": [{"url": API_PREFIX}],
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": dict(sorted(paths.items())),
    }
