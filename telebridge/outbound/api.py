"""``POST /v1/calls`` (place a call) and ``GET /v1/calls/{sid}`` (follow it), behind a bearer key.

Off (404) unless an API key is configured (``TELEBRIDGE_API_KEY`` or ``TELEBRIDGE_API_KEYS``); then
``Authorization: Bearer <key>`` is required — checked, in constant time, by :mod:`telebridge.security`'s
middleware before the route runs: 401 for a missing or wrong key. 422 with pydantic's details for a bad body.
The agent that answers is the server's own (a per-call agent is a ``telebridge call --agent`` feature: loading
code named by an HTTP client is not something an API key should allow).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..security import require_key
from .calls import PlaceCallError, place_call
from .phone import InvalidNumber, e164

log = logging.getLogger("telebridge.outbound.api")

__all__ = ["CreateCall", "create_call", "get_call", "list_calls"]


class CreateCall(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    to: str
    from_: str = Field(alias="from")
    data: dict[str, str] = Field(default_factory=dict)
    amd: bool = False

    @field_validator("to", "from_")
    @classmethod
    def _e164(cls, value: str) -> str:
        try:
            return e164(value)
        except InvalidNumber as exc:
            raise ValueError(str(exc)) from None


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status_code=status)


_STATUS_FOR_KIND = {"invalid_number": 422, "invalid_to": 422, "invalid_from": 422, "permission": 422,
                    "rate_limited": 429, "config": 503, "credentials": 502, "network": 502, "twilio": 502}


async def create_call(request: Request) -> JSONResponse:
    denied = require_key(request)
    if denied is not None:
        return denied
    try:
        body = CreateCall.model_validate(json.loads(await request.body() or b"null"))
    except json.JSONDecodeError as exc:
        return _error(422, "invalid_request", "body is not valid JSON", details=[{"type": "json_invalid",
                      "loc": ["body"], "msg": str(exc)}])
    except ValidationError as exc:
        details = exc.errors(include_url=False, include_context=False, include_input=False)
        return _error(422, "invalid_request", "invalid call request", details=details)
    try:
        placed = await place_call(request.app.state.settings, to=body.to, from_=body.from_, data=body.data,
                                  amd=body.amd)
    except PlaceCallError as exc:
        return _error(_STATUS_FOR_KIND.get(str(exc.kind), 502), str(exc.kind), str(exc), twilio_code=exc.code)
    registry = request.app.state.runtime.call_registry
    await registry.update(placed.call_sid, direction="outbound-api", status=placed.status, to=placed.to,
                          amd=placed.amd, created_at=placed.created_at, **{"from": placed.from_})
    return JSONResponse({"call_sid": placed.call_sid, "status": placed.status}, status_code=201)


async def get_call(request: Request) -> JSONResponse:
    denied = require_key(request)
    if denied is not None:
        return denied
    record = await request.app.state.runtime.call_registry.get(request.path_params["sid"])
    if record is None:
        return _error(404, "not_found", "no such call")
    return JSONResponse(record.model_dump(mode="json", by_alias=True))


MAX_LISTED = 500


async def list_calls(request: Request) -> JSONResponse:
    """``GET /v1/calls?limit=50``: the most recent calls, newest first — every instance's with ``REDIS_URL``."""
    denied = require_key(request)
    if denied is not None:
        return denied
    try:
        limit = int(request.query_params.get("limit", "50"))
    except ValueError:
        return _error(422, "invalid_request", "limit must be a whole number")
    limit = max(1, min(limit, MAX_LISTED))
    records = await request.app.state.runtime.call_registry.list(limit)
    return JSONResponse({"calls": [r.model_dump(mode="json", by_alias=True) for r in records]})
