"""The access decision: who a request is (:class:`Access`) or why it is refused (:class:`Refusal`).

One :class:`Guard` per app holds the key ring, the session-token store and the limiters. It takes the time from
``clock`` (``time.time`` unless a test passes another), so the whole decision is testable without a server;
:mod:`.middleware` is the ASGI glue around it. The limits are counted in-process (:mod:`.limits`) and, with
``REDIS_URL``, across every worker and instance (:mod:`telebridge.state.guard_limits`, :meth:`Guard.share_limits`):
the shared count decides while Redis answers, this process's own count when it does not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers

from ..console.auth import ConsoleAuth
from .keys import KeyRing
from .limits import ConcurrencyLimiter, Lease, SessionLength, WindowLimiter, acquire_all, admit_all, hold_all
from .policy import Policy, bearer, is_loopback, origin_allowed, parse_origins, relayed
from .redact import install_redaction
from .tokens import Minted, SessionTokens, StoreFull

if TYPE_CHECKING:
    from ..settings import Settings

log = logging.getLogger("telebridge.security")

ACCESS_SCOPE_KEY = "telebridge.access"
UPLOAD_WINDOW = 3600.0


@dataclass(frozen=True)
class Access:
    via: str  # key | token | loopback | open
    key: str | None  # the key's label ("key1"); for a token, the key that minted it
    client: str  # the client's address (after trusted proxies), "" when unknown


@dataclass(frozen=True)
class Refusal:
    status: int
    code: str
    message: str
    retry_after: float | None = None


NO_KEY_LOOPBACK_ONLY = Refusal(
    403, "loopback_only", "no API key is configured on this server (TELEBRIDGE_API_KEYS): this endpoint answers "
    "loopback clients only")
NO_CONSOLE_TOKEN_LOOPBACK_ONLY = Refusal(
    403, "loopback_only", "neither TELEBRIDGE_CONSOLE_TOKEN nor an API key is configured on this server: the console "
    "and /metrics answer loopback clients only. Set one to reach them from elsewhere.")
CONSOLE_LOGINS_PER_MINUTE = 20  # failed console logins per client address


class Guard:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.keys = KeyRing.from_settings(settings)
        self.tokens = SessionTokens(settings.session_token_ttl)
        self.shared_tokens: Any = None  # telebridge.state.tokens.RedisTokens with REDIS_URL: tokens work on any worker
        self.shared_limits: Any = None  # telebridge.state.guard_limits.RedisGuardLimits with REDIS_URL (share_limits)
        self.allowed_origins, self.any_origin = parse_origins(settings.allowed_origins)
        proxies = [p.strip() for p in settings.trusted_proxies.split(",") if p.strip()]
        self.trust_any_proxy = "*" in proxies
        self.body_limit = settings.max_request_body_kb * 1024
        self.sessions_per_key = ConcurrencyLimiter(settings.max_realtime_sessions_per_key, name="sessions-per-key")
        self.sessions_per_client = ConcurrencyLimiter(settings.max_realtime_sessions_per_client,
                                                      name="sessions-per-client")
        self.session_length = SessionLength(settings.max_realtime_session_seconds)
        self.uploads_per_key = WindowLimiter(settings.max_uploads_per_hour_per_key, UPLOAD_WINDOW,
                                             name="uploads-per-key")
        self.uploads_per_client = WindowLimiter(settings.max_uploads_per_hour_per_client, UPLOAD_WINDOW,
                                                name="uploads-per-client")
        self.console = ConsoleAuth.from_settings(settings, self.keys)
        self.console_logins = WindowLimiter(CONSOLE_LOGINS_PER_MINUTE, 60.0, name="console-logins")
        install_redaction()

    # --- who is it -------------------------------------------------------------------------------------------
    def check(self, policy: Policy, headers: Headers, client: str, token: str | None = None) -> Access | Refusal:
        """Authenticate a request for ``policy``. ``token`` is a session token taken from a WebSocket handshake."""
        if policy.kind in ("open", "twilio") or (policy.kind == "read" and not self.settings.protect_reads):
            return Access("open", None, client)
        if policy.kind == "key_only" and not self.keys:
            return Refusal(404, "not_found", "Not Found")
        origin = headers.get("origin")
        if origin is not None and not origin_allowed(
                origin, host=headers.get("host"), public_url=self.settings.public_url,
                allowed=self.allowed_origins, any_origin=self.any_origin):
            return Refusal(403, "origin_not_allowed",
                           f"origin {origin[:100]!r} is not allowed here (TELEBRIDGE_ALLOWED_ORIGINS)")
        if policy.kind == "console":
            return self._check_console(policy, headers, client)
        if not self.keys:
            if is_loopback(client) and not relayed(headers) and not self.trust_any_proxy:
                return Access("loopback", None, client)
            return NO_KEY_LOOPBACK_ONLY
        presented = bearer(headers)
        if presented is not None:
            label = self.keys.match(presented)
            if label is not None:
                return Access("key", label, client)
            if not (policy.tokens and SessionTokens.looks_like_token(presented)):
                return Refusal(401, "invalid_api_key", "the API key is not valid")
            token = presented
        if token is not None and policy.tokens:
            label = self.tokens.redeem(token, self.clock())
            if label is not None:
                return Access("token", label, client)
            return Refusal(401, "invalid_session_token", "the session token is not valid, was used or has expired")
        what = "an API key (Authorization: Bearer <key>)" + (" or a session token" if policy.tokens else "")
        return Refusal(401, "unauthorized", f"{what} is required")

    def _check_console(self, policy: Policy, headers: Headers, client: str) -> Access | Refusal:
        """``/console`` and ``/metrics``: the console token or a key (bearer), or the login cookie (console only)."""
        console = self.console
        if not console.configured:
            if is_loopback(client) and not relayed(headers) and not self.trust_any_proxy:
                return Access("loopback", None, client)
            return NO_CONSOLE_TOKEN_LOOPBACK_ONLY
        presented = bearer(headers)
        if presented is not None:
            label = console.match(presented)
            if label is None:
                return Refusal(401, "invalid_api_key", "the console token or API key is not valid")
            return Access("console" if label == "console" else "key", label, client)
        if policy.cookie:
            session = console.cookie_of(headers.get("cookie"))
            if session is not None and not policy.page:
                label = console.verify(session, self.clock())
                if label is None:
                    return Refusal(401, "session_expired", "the console login has expired or is no longer valid: "
                                   "log in again")
                return Access("session", label, client)
        if policy.page:
            return Access("open", None, client)
        return Refusal(401, "unauthorized", "the console token or an API key is required (Authorization: Bearer "
                       "<token>, or log in at /console)")

    async def console_login(self, presented: str, client: str) -> str | Refusal:
        """``POST /console/login``: the credential's label, or why not. Failed attempts are limited per address."""
        checks, now = [(self.console_logins, "addr:" + client)], self.clock()
        wait = await self._windows(checks, now, "check")
        if wait:
            return Refusal(429, "rate_limit_exceeded", f"too many failed logins; try again in {int(wait) + 1} s",
                           retry_after=wait)
        label = self.console.match(presented) if presented else None
        if label is None:
            await self._windows(checks, now, "add")
            return Refusal(401, "invalid_token", "that is not the console token or an API key")
        return label

    async def sync_token(self, presented: str | None) -> None:
        """With shared tokens: take ``presented`` from the shared store (once, deployment-wide) so :meth:`check`
        finds it here, or forget it here if the store says it is used up. Redis away: this worker's own only."""
        if self.shared_tokens is None or not presented or not SessionTokens.looks_like_token(presented):
            return
        reachable, label = await self.shared_tokens.redeem(presented)
        if label is not None:
            self.tokens.adopt(presented, label, self.clock())
        elif reachable:
            self.tokens.discard(presented)

    async def share_token(self, minted: Minted, key_label: str) -> None:
        if self.shared_tokens is not None:
            await self.shared_tokens.store(minted.value, key_label, self.tokens.ttl)

    # --- limits ----------------------------------------------------------------------------------------------
    def share_limits(self, link: Any) -> None:
        """Count the limits across every worker and instance on ``link`` (a RedisLink; None: in-process only)."""
        if link is None:
            self.shared_limits = None
            return
        from ..state.guard_limits import RedisGuardLimits

        self.shared_limits = RedisGuardLimits(link, clock=self.clock)

    async def _windows(self, checks: list[tuple[WindowLimiter, str]], now: float, mode: str = "admit") -> float:
        """The wait before a hit on ``checks`` is allowed (0: allowed, and recorded unless ``mode`` is "check";
        "add": recorded whatever the limits). Shared count first; this process's own always records, and decides
        when there is no shared count or Redis does not answer."""
        wait = None
        if self.shared_limits is not None:
            wait = await self.shared_limits.admit(checks, now, mode)
        if wait is None:
            if mode == "admit":
                return admit_all(checks, now)
            wait = max((limiter.retry_after(subject, now) for limiter, subject in checks), default=0.0)
        if mode == "add" or (mode == "admit" and wait == 0):
            for limiter, subject in checks:
                limiter.record(subject, now)
        return 0.0 if mode == "add" else wait

    async def admit_upload(self, access: Access) -> Refusal | None:
        checks = [(self.uploads_per_client, "addr:" + access.client)]
        if access.key is not None:
            checks.append((self.uploads_per_key, "key:" + access.key))
        wait = await self._windows(checks, self.clock())
        if wait == 0:
            return None
        return Refusal(429, "rate_limit_exceeded", f"too many uploads; try again in {int(wait) + 1} s",
                       retry_after=wait)

    async def admit_session(self, access: Access | None) -> Lease | Refusal:
        """A lease on the session's slots (release it when the session ends), or the 429 saying whose are full."""
        if access is None:  # the middleware did not run: fail closed
            return Refusal(401, "unauthorized", "not authorized")
        checks = [(self.sessions_per_client, "addr:" + access.client)]
        if access.key is not None:
            checks.append((self.sessions_per_key, "key:" + access.key))
        shared = self.shared_limits
        full: ConcurrencyLimiter | None = None
        if shared is not None:
            verdict, shared_lease = await shared.acquire(checks, self.clock())
            if verdict == 0:  # admitted deployment-wide; this process counts it too, for when Redis is away
                lease = hold_all(checks)
                if shared_lease is not None:
                    lease.on_release = lambda: shared.release(shared_lease)
                return lease
            if verdict is not None:
                full = checks[verdict - 1][0]
        if full is None:  # no Redis, or it did not answer: this process's own count decides
            lease = acquire_all(checks)
            if lease is not None:
                if shared is not None:  # written to Redis as soon as it answers again
                    held = shared.new_lease()
                    shared.hold(held, shared.lease_keys(checks))
                    lease.on_release = lambda: shared.release(held)
                return lease
            full = next(limiter for limiter, subject in checks if not limiter.available(subject))
        whose = "this client" if full is self.sessions_per_client else "this API key"
        return Refusal(429, "rate_limit_exceeded", f"too many concurrent realtime sessions for {whose}")

    def session_seconds(self) -> float | None:
        """How long a realtime session may last from its start (None: no limit)."""
        return self.session_length.remaining(0.0, 0.0)

    def mint(self, access: Access) -> Minted | Refusal:
        if access.via != "key" or access.key is None:
            return Refusal(401, "unauthorized", "an API key is required to create session tokens")
        try:
            return self.tokens.mint(access.key, self.clock())
        except StoreFull as exc:
            return Refusal(429, "rate_limit_exceeded", f"{exc}; try again shortly", retry_after=5.0)


def log_access_posture(settings: Settings) -> None:
    """At start-up: say plainly who can reach the protected endpoints."""
    keys = KeyRing.from_settings(settings)
    if settings.console_token is not None:
        log.info("TELEBRIDGE_CONSOLE_TOKEN is set: /console and /metrics take it (as well as any API key)")
    if keys:
        log.info("%d API key(s) configured: /v1/realtime, POST /v1/voices, /v1/calls, /console and /metrics "
                 "require one%s", len(keys), "" if not settings.protect_reads else " (and GET /v1/voices, /v1/health)")
    else:
        console = "" if settings.console_token is not None else ", /console and /metrics"
        log.warning("No API key set (TELEBRIDGE_API_KEYS): /v1/realtime, POST /v1/voices%s answer loopback clients "
                    "only, and /v1/calls and /v1/realtime/sessions are off. Set a key before serving anyone else.",
                    console)
    proxies = [p.strip() for p in settings.trusted_proxies.split(",") if p.strip()]
    if "*" in proxies:
        log.warning("TELEBRIDGE_TRUSTED_PROXIES=*: every client's X-Forwarded-For is believed, so client addresses "
                    "(limits, the loopback-only default) can be forged; list your proxies' addresses instead.")
    if "*" in [o.strip() for o in settings.allowed_origins.split(",")]:
        log.warning("TELEBRIDGE_ALLOWED_ORIGINS=*: any web page may open realtime sessions and upload voices "
                    "from its visitors' browsers.")
