"""Ending and transferring a live call through Twilio's REST API, with the ``twilio`` SDK.

Why REST at all: a Media Stream has no "hang up" message. Closing the WebSocket makes Twilio run the TwiML after
``</Connect>`` (our apology for broken streams), so a polite goodbye must end the call by updating the call
resource instead: ``Status=completed`` hangs up, ``Twiml=<Response><Dial>…`` transfers (and ends the stream).

Why a custom HTTP client: the SDK's own async client is aiohttp; telebridge already speaks HTTP with httpx, and
one client per process keeps connections warm. :class:`HttpxTwilioClient` is a ``twilio.http.AsyncHttpClient``,
so the SDK still builds the URLs, encodes the form, authenticates and parses Twilio's errors (``20404``: the
call already ended). ``base_url`` points the SDK's ``api`` domain elsewhere (``Domain.base_url``, used by every
v2010 resource URL), which is how tests use a local fake of the API.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http import AsyncHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from .twiml import dial

log = logging.getLogger("telebridge.rest")

__all__ = ["HttpxTwilioClient", "TwilioCallControl", "CALL_NOT_FOUND"]

CALL_NOT_FOUND = 20404  # Twilio's error code when the call (no longer) exists


class HttpxTwilioClient(AsyncHttpClient):
    """The SDK's async HTTP interface on top of ``httpx.AsyncClient``."""

    def __init__(self, timeout: float = 5.0) -> None:
        super().__init__(log, True, timeout)
        self._client: httpx.AsyncClient | None = None

    async def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        self.log_request({"method": method, "url": url, "params": params, "data": data, "headers": headers})
        response = await self._client.request(
            method,
            url,
            params=params,  # type: ignore[arg-type]
            data=data,  # type: ignore[arg-type]
            headers=headers,
            auth=auth,
            timeout=timeout if timeout is not None else self.timeout,
            follow_redirects=allow_redirects,
        )
        result = Response(response.status_code, response.text, response.headers)
        self.log_response(response.status_code, result)
        return result

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class TwilioCallControl:
    """Hang up or transfer one live call. Every method returns True on success and never raises."""

    def __init__(
        self,
        *,
        call_sid: str,
        account_sid: str,
        username: str,
        password: str,
        base_url: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.call_sid = call_sid
        self.account_sid = account_sid
        self._http = HttpxTwilioClient(timeout)
        self._client = Client(username, password, account_sid=account_sid, http_client=self._http)
        if base_url:
            self._client.api.base_url = base_url.rstrip("/")

    @classmethod
    def from_settings(cls, settings: Any, call_sid: str, account_sid: str | None) -> TwilioCallControl | None:
        """A control for ``call_sid`` if the settings hold credentials for it, else ``None``."""
        token = settings.auth_token()
        account = account_sid or settings.twilio_account_sid
        if not (token and account and call_sid):
            return None
        return cls(
            call_sid=call_sid,
            account_sid=account,
            username=settings.twilio_account_sid or account,
            password=token,
            base_url=settings.twilio_api_base_url,
        )

    def _call(self) -> Any:
        return self._client.api.v2010.accounts(self.account_sid).calls(self.call_sid)

    async def hang_up(self) -> bool:
        """``Status=completed``. A call that already ended (20404) counts as hung up."""
        return await self._update(status="completed")

    async def transfer(
        self, target: str, caller_id: str | None = None, *, timeout: int | None = None,
        whisper_url: str | None = None,
    ) -> bool:
        """Replace the call's TwiML with ``<Dial>target</Dial>`` (see :func:`~.twiml.dial` for the options);
        Twilio ends our stream and dials."""
        try:
            twiml = dial(target, caller_id=caller_id, timeout=timeout, whisper_url=whisper_url)
        except ValueError as exc:
            log.warning("call %s: refusing to transfer: %s", self.call_sid, exc)
            return False
        return await self._update(twiml=twiml)

    async def _update(self, **fields: Any) -> bool:
        try:
            await self._call().update_async(**fields)
        except TwilioRestException as exc:
            if exc.code == CALL_NOT_FOUND:
                log.info("call %s: already ended (20404)", self.call_sid)
                return "status" in fields
            log.warning("call %s: Twilio refused %s: HTTP %s code %s %s", self.call_sid, sorted(fields),
                        exc.status, exc.code, exc.msg)
            return False
        except (TwilioException, httpx.HTTPError, OSError) as exc:
            log.warning("call %s: Twilio REST %s failed: %r", self.call_sid, sorted(fields), exc)
            return False
        return True

    async def aclose(self) -> None:
        await self._http.aclose()
