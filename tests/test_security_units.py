"""telebridge.security without a server: keys, session tokens, limiters (synthetic clock), policies, origins,
redaction, and the guard's decisions."""

from __future__ import annotations

import logging

import pytest
from starlette.datastructures import Headers

from telebridge.security.guard import Access, Guard, Refusal
from telebridge.security.keys import KeyRing
from telebridge.security.limits import ConcurrencyLimiter, SessionLength, WindowLimiter, acquire_all, admit_all
from telebridge.security.policy import (
    CONSOLE, CONSOLE_PAGE, KEY_ONLY, METRICS, OPEN, PROTECTED, READ, REALTIME, TWILIO, UPLOAD, is_loopback,
    origin_allowed, parse_origins,
    policy_for, take_ws_token,
)
from telebridge.security.redact import SecretRedactor, install_redaction, redact_secrets
from telebridge.security.tokens import SessionTokens, StoreFull
from telebridge.settings import Settings


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_keyring_matches_every_configured_key_and_never_shows_them():
    ring = KeyRing(["alpha-secret", " beta-secret ", "", "alpha-secret"])
    assert len(ring) == 2 and ring.match("alpha-secret") == "key1" and ring.match("beta-secret") == "key2"
    assert ring.match("alpha-secre") is None and ring.match("") is None and ring.match("alpha-secretX") is None
    assert "secret" not in repr(ring) and not KeyRing([])
    settings = Settings(_env_file=None, api_key="one", api_keys="two, three")
    combined = KeyRing.from_settings(settings)
    assert [combined.match(k) for k in ("one", "two", "three")] == ["key1", "key2", "key3"]
    assert "two" not in repr(settings) and "three" not in str(settings.model_dump())


def test_session_tokens_are_single_use_expire_and_are_stored_hashed():
    store = SessionTokens(ttl=60, max_outstanding=3)
    minted = store.mint("key1", now=1000.0)
    assert minted.value.startswith("tbst_") and len(minted.value) >= 5 + 43 and minted.expires_at == 1060
    assert minted.value not in repr(store._tokens) and minted.value.encode() not in b"".join(store._tokens)
    assert store.redeem(minted.value, now=1059.9) == "key1"
    assert store.redeem(minted.value, now=1059.9) is None  # used up
    late = store.mint("key2", now=1000.0)
    assert store.redeem(late.value, now=1060.0) is None  # expired
    assert store.redeem("tbst_made-up", now=1000.0) is None and store.redeem("key", now=1000.0) is None
    assert len({store.mint("k", now=2000.0).value for _ in range(3)}) == 3
    with pytest.raises(StoreFull):
        store.mint("k", now=2000.0)
    assert store.mint("k", now=2061.0).value  # the expired ones were purged


def test_window_limiter_slides_and_refused_hits_do_not_count():
    per_key, per_addr = WindowLimiter(2, 3600), WindowLimiter(3, 3600)
    assert admit_all([(per_key, "key:a"), (per_addr, "addr:x")], now=0) == 0
    assert admit_all([(per_key, "key:a"), (per_addr, "addr:x")], now=10) == 0
    wait = admit_all([(per_key, "key:a"), (per_addr, "addr:x")], now=20)
    assert wait == pytest.approx(3600 - 20)
    assert per_addr.count("addr:x", now=20) == 2  # the refused attempt recorded nothing
    assert admit_all([(per_key, "key:b"), (per_addr, "addr:x")], now=30) == 0  # another key, same address
    assert admit_all([(per_key, "key:b"), (per_addr, "addr:x")], now=40) > 0  # the address is full now
    assert admit_all([(per_key, "key:a"), (per_addr, "addr:x")], now=3600.5) == 0  # the first hit slid out
    unlimited = WindowLimiter(0, 3600)
    assert all(unlimited.retry_after("s", now=0) == 0 for _ in range(5))
    bounded = WindowLimiter(1, 60, max_subjects=2)
    for i, subject in enumerate("abc"):
        bounded.record(subject, now=i)
    assert len(bounded._hits) == 2 and bounded.count("a", now=3) == 0


def test_concurrency_limits_lease_and_release_once():
    per_key, per_addr = ConcurrencyLimiter(2), ConcurrencyLimiter(1)
    first = acquire_all([(per_addr, "addr:x"), (per_key, "key:a")])
    assert first is not None and acquire_all([(per_addr, "addr:x"), (per_key, "key:a")]) is None
    assert per_key.active("key:a") == 1  # nothing was held for the refused one
    second = acquire_all([(per_addr, "addr:y"), (per_key, "key:a")])
    assert second is not None and acquire_all([(per_addr, "addr:z"), (per_key, "key:a")]) is None
    first.release()
    first.release()
    assert per_key.active("key:a") == 1 and per_addr.active("addr:x") == 0 and "addr:x" not in per_addr._active


def test_session_length_with_a_synthetic_clock():
    limit = SessionLength(90)
    assert limit.remaining(started=100, now=150) == 40 and not limit.expired(100, 189.9) and limit.expired(100, 190)
    assert SessionLength(0).remaining(0, 10**9) is None and not SessionLength(0).expired(0, 10**9)


@pytest.mark.parametrize("path, method, policy", [
    ("/twilio/voice", "POST", TWILIO), ("/twilio/media", "WEBSOCKET", TWILIO), ("/twilio/call-status", "POST", TWILIO),
    ("/v1/realtime", "WEBSOCKET", REALTIME), ("/v1/realtime/", "WEBSOCKET", REALTIME),
    ("/v1/realtime/sessions", "POST", KEY_ONLY), ("/v1/calls", "POST", KEY_ONLY), ("/v1/calls/CA1", "GET", KEY_ONLY),
    ("/v1/voices", "POST", UPLOAD), ("/v1/voices", "GET", READ), ("/v1/health", "GET", READ),
    ("/console", "GET", CONSOLE_PAGE), ("/console/api/calls", "GET", CONSOLE), ("/metrics", "GET", METRICS),
    ("/v1/something-new", "DELETE", PROTECTED), ("/healthz", "GET", OPEN), ("/consoles", "GET", OPEN),
])
def test_each_path_is_behind_its_door(path, method, policy):
    assert policy_for(path, method) == policy


def test_loopback_origins_and_tokens_from_the_handshake():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("192.0.2.2") and not is_loopback("localhost") and not is_loopback("") and not is_loopback(None)
    allowed, any_origin = parse_origins("https://App.Example.com/, http://partner.test:8080")
    assert not any_origin and parse_origins("*")[1]

    def ok(origin: str, host: str = "voice.example.com") -> bool:
        return origin_allowed(origin, host=host, public_url="https://voice.example.com", allowed=allowed)

    assert ok("https://app.example.com") and ok("http://partner.test:8080") and ok("https://voice.example.com")
    assert ok("http://127.0.0.1:8000", host="127.0.0.1:8000") and ok("http://localhost:5173") and ok("http://[::1]:3000")
    assert not ok("https://evil.example") and not ok("null") and not ok("https://voice.example.com.evil.example")
    assert not ok("http://partner.test") and not ok("https://app.example.com:444")

    scope = {"subprotocols": ["realtime", "telebridge-token.tbst_abc"], "query_string": b"a=1&token=tbst_q&key=k"}
    assert take_ws_token(scope) == "tbst_abc"
    assert scope["subprotocols"] == ["realtime"] and scope["query_string"] == b"a=1"
    scope = {"subprotocols": ["realtime"], "query_string": b"token=tbst_q"}
    assert take_ws_token(scope) == "tbst_q" and scope["query_string"] == b""
    scope = {"subprotocols": ["realtime", "openai-insecure-api-key.tbst_o"], "query_string": b""}
    assert take_ws_token(scope) == "tbst_o"


def test_redaction_of_headers_tokens_and_query_parameters():
    lines = ["< Authorization: Bearer sk-live-123", "< Sec-WebSocket-Protocol: realtime, telebridge-token.tbst_AbC-9",
             '127.0.0.1:5 - "WebSocket /v1/realtime?token=tbst_AbC-9&x=1" 403', "minted tbst_AbC-9 for you"]
    cleaned = [redact_secrets(line) for line in lines]
    assert not any(s in c for c in cleaned for s in ("sk-live-123", "AbC-9")), cleaned
    assert cleaned[3] == "minted tbst_[redacted] for you"
    install_redaction()
    install_redaction()
    uv = logging.getLogger("uvicorn.error")
    assert sum(isinstance(f, SecretRedactor) for f in uv.filters) == 1
    record = uv.makeRecord(uv.name, logging.DEBUG, __file__, 1, "< %s: %s", ("Authorization", "Bearer sk-live-123"),
                           None)
    assert all(f.filter(record) for f in uv.filters)  # the logger's own filters run before any handler
    assert "sk-live-123" not in record.getMessage() and "[redacted]" in record.getMessage()


def guard(**overrides) -> tuple[Guard, Clock]:
    clock = Clock()
    return Guard(Settings(_env_file=None, **overrides), clock=clock), clock


def headers(**values: str) -> Headers:
    return Headers({k.replace("_", "-"): v for k, v in values.items()})


def test_guard_without_keys_answers_loopback_only_and_not_through_a_relay():
    g, _ = guard()
    assert g.check(REALTIME, headers(), "127.0.0.1") == Access("loopback", None, "127.0.0.1")
    assert g.check(REALTIME, headers(authorization="Bearer whatever"), "::1").via == "loopback"
    assert g.check(UPLOAD, headers(), "203.0.113.9").status == 403
    assert g.check(PROTECTED, headers(x_real_ip="203.0.113.9"), "127.0.0.1").status == 403
    assert g.check(PROTECTED, headers(forwarded="for=203.0.113.9"), "127.0.0.1").status == 403
    assert g.check(PROTECTED, headers(x_forwarded_proto="https"), "127.0.0.1").status == 403  # infra/nginx.conf's
    assert g.check(PROTECTED, headers(x_forwarded_for="127.0.0.1"), "127.0.0.1").status == 403  # relayed, even so
    assert g.check(KEY_ONLY, headers(), "127.0.0.1").status == 404
    assert g.check(READ, headers(), "203.0.113.9").via == "open" and g.check(TWILIO, headers(), "x").via == "open"
    assert g.check(REALTIME, headers(origin="https://evil.example"), "127.0.0.1").code == "origin_not_allowed"
    star, _ = guard(trusted_proxies="*")
    assert star.check(REALTIME, headers(), "127.0.0.1").status == 403  # any client could claim to be loopback
    reads, _ = guard(protect_reads=True)
    assert reads.check(READ, headers(), "203.0.113.9").status == 403 and reads.check(READ, headers(), "::1").via


async def test_guard_with_keys_tokens_and_limits():
    g, clock = guard(api_keys="alpha,beta", session_token_ttl=30, max_realtime_sessions_per_key=1,
                     max_uploads_per_hour_per_client=1)
    assert g.check(REALTIME, headers(), "127.0.0.1").status == 401  # keys configured: loopback is not enough
    assert g.check(KEY_ONLY, headers(authorization="Bearer nope"), "1.2.3.4").code == "invalid_api_key"
    alpha = g.check(KEY_ONLY, headers(authorization="Bearer alpha"), "1.2.3.4")
    assert alpha == Access("key", "key1", "1.2.3.4")
    minted = g.mint(alpha)
    assert not isinstance(minted, Refusal)
    assert g.check(UPLOAD, headers(authorization=f"Bearer {minted.value}"), "5.6.7.8").status == 401  # realtime only
    assert g.check(REALTIME, headers(), "5.6.7.8", token=minted.value) == Access("token", "key1", "5.6.7.8")
    assert g.check(REALTIME, headers(), "5.6.7.8", token=minted.value).code == "invalid_session_token"
    stale = g.mint(alpha)
    clock.t += 31
    assert g.check(REALTIME, headers(authorization=f"Bearer {stale.value}"), "5.6.7.8").status == 401
    assert g.mint(Access("token", "key1", "x")).status == 401  # a token cannot mint tokens
    lease = await g.admit_session(Access("token", "key1", "5.6.7.8"))
    refused = await g.admit_session(Access("key", "key1", "9.9.9.9"))
    assert isinstance(refused, Refusal) and refused.status == 429 and "API key" in refused.message
    assert not isinstance(await g.admit_session(Access("key", "key2", "9.9.9.9")), Refusal)
    lease.release()
    assert not isinstance(await g.admit_session(Access("key", "key1", "9.9.9.9")), Refusal)
    assert await g.admit_upload(alpha) is None
    limited = await g.admit_upload(Access("key", "key2", "1.2.3.4"))
    assert limited.status == 429 and limited.retry_after == pytest.approx(3600)
    clock.t += 3600
    assert await g.admit_upload(alpha) is None


def test_start_up_says_who_gets_in_and_serve_trusts_only_the_configured_proxies(caplog):
    from telebridge.security import uvicorn_proxy_options

    with caplog.at_level(logging.INFO, logger="telebridge.security"):
        Settings(_env_file=None).log_security_posture()
    warning = next(r for r in caplog.records if r.name == "telebridge.security" and r.levelno == logging.WARNING)
    assert "loopback clients only" in warning.getMessage()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="telebridge.security"):
        Settings(_env_file=None, api_keys="k-secret-1", trusted_proxies="*").log_security_posture()
    messages = [r.getMessage() for r in caplog.records if r.name == "telebridge.security"]
    assert any("1 API key(s) configured" in m for m in messages) and any("TRUSTED_PROXIES=*" in m for m in messages)
    assert not any("k-secret-1" in m for m in messages)
    assert uvicorn_proxy_options(Settings(_env_file=None)) == {"proxy_headers": True,
                                                              "forwarded_allow_ips": "127.0.0.1,::1"}
    options = uvicorn_proxy_options(Settings(_env_file=None, trusted_proxies="10.0.0.0/8"))
    assert options["forwarded_allow_ips"] == "10.0.0.0/8"
