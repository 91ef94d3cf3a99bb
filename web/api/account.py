"""API v1: the token holder's own account, what the Account page does (``/account…``).

    GET    /account                       name, email, signature
    PATCH  /account {name?, signature?}   set them; enrolments that waited for them resume
    POST   /account/password              {current_password, new_password}: 204
    GET    /account/devices               browsers signed in from (their opens are "self")
    DELETE /account/devices/{id}          forget one: its opens count as a reader's again
    GET    /account/tokens                the tokens that still work (never the tokens)
    POST   /account/tokens {name}         a new token, in this answer only
    DELETE /account/tokens/{id}           revoke: refused from the next request on

The rules are `web.app.profile`'s, the page's own. Only the holder's rows are
reachable: another person's device or token id answers 404, in any team.
"""

from __future__ import annotations

from datetime import datetime

from flask import g
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field

from core.models import ApiToken, Device, User
from core.templates import SIGNATURE_LIMIT
from core.tokens import TOKEN_NAME_LIMIT
from web.api.common import ApiError, error_response, parse_body
from web.api.operations import operation
from web.api.schemas import Request
from web.app import profile
from web.auth import request_ip
from web.db import db


class AccountOut(BaseModel):
    id: int
    email: str
    name: str | None = Field(description="{{sender_name}} in the emails this person sends")
    signature: str | None = Field(
        description="{{signature}}: HTML the allow-list kept; null when none"
    )
    team_id: int


class AccountUpdated(AccountOut):
    resumed_enrollments: int = Field(
        description="paused enrolments that waited only for this person's values and went on"
    )


class AccountUpdate(Request):
    name: str | None = Field(default=None, max_length=profile.NAME_LIMIT)
    signature: str | None = Field(
        default=None,
        max_length=SIGNATURE_LIMIT,
        description="plain text, or HTML (only the allow-list's tags are kept); empty: none",
    )


class PasswordChange(Request):
    current_password: str = Field(max_length=1000)
    new_password: str = Field(max_length=1000, description="12 to 128 characters, not the email")


class DeviceOut(BaseModel):
    id: int
    user_agent: str | None
    created_at: datetime
    last_seen_at: datetime


class DeviceList(BaseModel):
    devices: list[DeviceOut]


class TokenOut(BaseModel):
    id: int
    name: str | None = Field(description="null for a token made with the command line")
    prefix: str = Field(description="its first characters, to recognise it")
    created_at: datetime
    last_used_at: datetime | None


class TokenList(BaseModel):
    tokens: list[TokenOut]


class TokenCreate(Request):
    name: str = Field(min_length=1, max_length=TOKEN_NAME_LIMIT)


class TokenCreated(TokenOut):
    token: str = Field(description="the token itself: shown in this answer only, never again")


def _me() -> User:
    me: User = g.user
    return me


def _invalid(exc: profile.InvalidError) -> ApiError:
    return ApiError(422, "invalid_request", str(exc), exc.fields)


def _account(user: User) -> AccountOut:
    return AccountOut(
        id=user.id, email=user.email, name=user.name, signature=user.signature, team_id=user.team_id
    )


def _token(row: ApiToken) -> TokenOut:
    return TokenOut(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
    )


@operation("GET", "/account", summary="Your account: name, email, signature", response=AccountOut)
def get_account() -> ResponseReturnValue:
    return _account(_me()).model_dump(mode="json")


@operation(
    "PATCH",
    "/account",
    summary="Set your name and signature; enrolments that waited for them go on",
    body=AccountUpdate,
    response=AccountUpdated,
)
def update_account() -> ResponseReturnValue:
    body = parse_body(AccountUpdate)
    try:
        saved = profile.save_profile(db(), _me(), name=body.name, signature=body.signature)
    except profile.InvalidError as exc:
        db().rollback()
        raise _invalid(exc) from None
    db().commit()
    out = AccountUpdated(**_account(_me()).model_dump(), resumed_enrollments=saved.resumed)
    return out.model_dump(mode="json")


@operation(
    "POST",
    "/account/password",
    summary="Change your password (the current one is required)",
    body=PasswordChange,
    status=204,
    errors={429: "Too many wrong current passwords (Retry-After says when to try again)"},
)
def change_password() -> ResponseReturnValue:
    body = parse_body(PasswordChange)
    try:
        profile.change_password(_me(), body.current_password, body.new_password, ip=request_ip())
    except profile.InvalidError as exc:
        db().rollback()
        raise _invalid(exc) from None
    except profile.TooManyAttemptsError as exc:
        db().rollback()
        response = error_response(429, "too_many_attempts", str(exc))
        response.headers["Retry-After"] = str(exc.wait)
        return response
    db().commit()
    return "", 204


@operation(
    "GET",
    "/account/devices",
    summary="The browsers you signed in from: their opens and clicks are labelled yours",
    response=DeviceList,
)
def list_devices() -> ResponseReturnValue:
    rows: list[Device] = profile.devices(db(), _me())
    out = DeviceList(devices=[DeviceOut.model_validate(d, from_attributes=True) for d in rows])
    return out.model_dump(mode="json")


@operation(
    "DELETE",
    "/account/devices/<int:device_id>",
    summary="Forget a browser: its opens count as a reader's again",
    status=204,
)
def forget_device(device_id: int) -> ResponseReturnValue:
    try:
        profile.forget_device(db(), _me(), device_id)
    except profile.NotYoursError:
        raise ApiError(404, "not_found", f"device {device_id} not found") from None
    db().commit()
    return "", 204


@operation("GET", "/account/tokens", summary="Your API tokens that still work", response=TokenList)
def list_tokens() -> ResponseReturnValue:
    rows = profile.tokens(db(), _me())
    return TokenList(tokens=[_token(r) for r in rows]).model_dump(mode="json")


@operation(
    "POST",
    "/account/tokens",
    summary="Make a named API token (the token is in this answer only)",
    body=TokenCreate,
    response=TokenCreated,
    status=201,
)
def create_token() -> ResponseReturnValue:
    body = parse_body(TokenCreate)
    try:
        token, row = profile.create_token(db(), _me(), body.name)
    except profile.InvalidError as exc:
        db().rollback()
        raise _invalid(exc) from None
    db().commit()
    out = TokenCreated(**_token(row).model_dump(), token=token)
    return out.model_dump(mode="json"), 201, {"Cache-Control": "no-store"}


@operation(
    "DELETE",
    "/account/tokens/<int:token_id>",
    summary="Revoke one of your API tokens",
    status=204,
)
def revoke_token(token_id: int) -> ResponseReturnValue:
    try:
        profile.revoke_token(db(), _me(), token_id)
    except profile.NotYoursError:
        raise ApiError(404, "not_found", f"token {token_id} not found") from None
    db().commit()
    return "", 204
