"""A fake of Cartesia's clone endpoint (``POST /voices/clone``), as documented: multipart ``clip`` (file),
``name``, ``language`` (required), ``description``/``enhance`` (optional); a ``Cartesia-Version`` header; the key
as ``X-API-Key`` (older API versions) or ``Authorization: Bearer`` (newer). Answers the Voice object
(``id``, ``name``, ``language``, ...). Bad key: 401; ``statuses`` are answered first (fault knob)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


@dataclass
class FakeCartesiaClone:
    api_key: str = "sk_car_test_0123456789"
    statuses: list[int] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.app = Starlette(routes=[Route("/voices/clone", self._clone, methods=["POST"])])

    def _authorized(self, request: Request) -> bool:
        bearer = request.headers.get("authorization", "")
        return request.headers.get("x-api-key") == self.api_key or bearer == f"Bearer {self.api_key}"

    async def _clone(self, request: Request) -> JSONResponse:
        form = await request.form()
        clip = form.get("clip")
        data = await clip.read() if hasattr(clip, "read") else b""
        entry = {"path": request.url.path, "query": dict(request.query_params),
                 "headers": {k: v for k, v in request.headers.items() if k.lower() not in ("x-api-key",
                                                                                             "authorization")},
                 "fields": {k: v for k, v in form.items() if isinstance(v, str)},
                 "clip": (getattr(clip, "filename", None), len(data), data[:4]), "key_ok": self._authorized(request)}
        await form.close()
        self.requests.append(entry)
        if not entry["key_ok"]:
            return JSONResponse({"error": "Invalid API key"}, status_code=401)
        if not request.headers.get("cartesia-version"):
            return JSONResponse({"error": "Cartesia-Version header is required"}, status_code=400)
        if self.statuses:
            return JSONResponse({"error": "fault"}, status_code=self.statuses.pop(0))
        fields = entry["fields"]
        if not data or not fields.get("name") or not fields.get("language"):
            return JSONResponse({"error": "clip, name and language are required"}, status_code=422)
        voice = {"id": str(uuid.uuid4()), "user_id": "user_test", "is_public": False, "name": fields["name"],
                 "description": fields.get("description", ""), "language": fields["language"],
                 "created_at": datetime.now(timezone.utc).isoformat()}
        entry["voice_id"] = voice["id"]
        return JSONResponse(voice)
