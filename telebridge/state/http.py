"""``GET /v1/recordings``: the recordings index — every instance's recordings with ``REDIS_URL``, this process's
otherwise. Behind the access middleware like every other ``/v1`` path (an API key, or loopback only when none
is configured). Each entry names the instance whose disk holds the file."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

MAX_LISTED = 500


async def list_recordings(request: Request) -> JSONResponse:
    try:
        limit = max(1, min(int(request.query_params.get("limit", "50")), MAX_LISTED))
    except ValueError:
        return JSONResponse({"error": {"code": "invalid_request", "message": "limit must be a whole number"}},
                            status_code=422)
    entries = await request.app.state.runtime.state.recordings.list(limit)
    return JSONResponse({"recordings": [e.model_dump(mode="json") for e in entries]})
