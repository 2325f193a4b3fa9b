"""Access control end to end (issue 12): real servers, real httpx and websockets clients.

``keyed``: four API keys and tight limits. ``local``: no key (the loopback-only default), listening on every
interface so a test can also arrive from a non-loopback address, with a short session length.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from pathlib import Path

import httpx
import pytest
import websockets
from conftest import LiveServer
from websockets.exceptions import ConnectionClosed, InvalidStatus

AGENT = str(Path(__file__).parent / "agents" / "voice_agent.py")
ALPHA, BETA, GAMMA, DELTA, EPSILON, ZETA = (f"{name}-key-0123456789" for name in (
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta"))
UPDATE = {"type": "session.update", "session": {"voice": "default", "allow_recording": False}}
pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def keyed():
    srv = LiveServer(agent=AGENT, bind="0.0.0.0", api_keys=",".join((ALPHA, BETA, GAMMA, DELTA, EPSILON, ZETA)),
                     session_token_ttl=2,
                     max_realtime_sessions_per_key=2, max_realtime_sessions_per_client=3,
                     max_uploads_per_hour_per_key=2, max_uploads_per_hour_per_client=3, max_request_body_kb=4)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def local():
    srv = LiveServer(agent=AGENT, bind="0.0.0.0", max_realtime_session_seconds=2.5)
    srv.start()
    yield srv
    srv.stop()


def ws_url(srv: LiveServer, query: str = "", host: str = "127.0.0.1") -> str:
    return f"ws://{host}:{srv.port}/v1/realtime" + (f"?{query}" if query else "")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def refused(url: str, status: int, **kwargs) -> dict:
    """The handshake is refused with ``status``; its JSON body."""
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(url, subprotocols=kwargs.pop("subprotocols", ["realtime"]), **kwargs):
            pass
    assert info.value.response.status_code == status, info.value.response
    return json.loads(info.value.response.body)


async def next_of(ws, kind: str, timeout: float = 10.0) -> dict:
    async def find() -> dict:
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == kind:
                return event
    return await asyncio.wait_for(find(), timeout)


async def talk(ws) -> None:
    """The session answers: a session.update is confirmed."""
    await ws.send(json.dumps(UPDATE))
    assert (await next_of(ws, "session.updated"))["session"]["voice"] == "default"


async def closed_with_error(ws, timeout: float = 10.0) -> dict:
    """Read to the end: the last error event before the close."""
    errors = []
    try:
        async with asyncio.timeout(timeout):
            async for message in ws:
                event = json.loads(message)
                if event["type"] == "error":
                    errors.append(event)
    except ConnectionClosed:
        pass
    assert errors, "an error event came before the close"
    return errors[-1]


async def mint(srv: LiveServer, key: str) -> str:
    async with httpx.AsyncClient() as http:
        response = await http.post(srv.url + "/v1/realtime/sessions", headers=bearer(key))
    assert response.status_code == 200, response.text
    secret = response.json()["client_secret"]
    assert response.headers["cache-control"] == "no-store" and set(secret) == {"value", "expires_at"}
    assert abs(secret["expires_at"] - (time.time() + srv.settings.session_token_ttl)) < 2
    return secret["value"]


def non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.254", 9))
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


# --- keys ----------------------------------------------------------------------------------------------------


async def test_every_protected_route_is_refused_without_credentials(keyed):
    async with httpx.AsyncClient(base_url=keyed.url) as http:
        responses = {
            "upload": await http.post("/v1/voices", files={"file": ("a.wav", b"RIFF", "audio/wav")}),
            "calls": await http.post("/v1/calls", json={"to": "+14155550100", "from": "+14155550101"}),
            "call": await http.get("/v1/calls/CA" + "0" * 32),
            "sessions": await http.post("/v1/realtime/sessions"),
            "console": await http.get("/console/api/calls"),  # the page itself loads: it shows the login
            "metrics": await http.get("/metrics"),
            "wrong key": await http.post("/v1/realtime/sessions", headers=bearer("alpha-key-01234567890")),
            "key in the query": await http.post(f"/v1/realtime/sessions?api_key={ALPHA}"),
        }
        voices, health, healthz = await http.get("/v1/voices"), await http.get("/v1/health"), await http.get("/healthz")
    for label, response in responses.items():
        assert response.status_code == 401, (label, response.status_code, response.text)
        assert response.headers["www-authenticate"] == "Bearer" and response.json()["error"]["code"], label
    assert voices.status_code == 200 and health.status_code in (200, 503) and healthz.status_code == 200
    assert (await refused(ws_url(keyed), 401))["error"]["code"] == "unauthorized"
    assert (await refused(ws_url(keyed), 401, additional_headers=bearer("nope")))["error"]["code"] == "invalid_api_key"
    await refused(ws_url(keyed, f"api_key={ALPHA}"), 401)
    await refused(ws_url(keyed), 401, subprotocols=["realtime", f"telebridge-token.{ALPHA}"])
    assert not keyed.runtime.calls  # nothing was accepted, so no audio could have been processed


async def test_a_key_opens_every_protected_route(keyed):
    async with httpx.AsyncClient(base_url=keyed.url, headers=bearer(ALPHA)) as http:
        upload = await http.post("/v1/voices", json={"file": "not multipart"})
        call = await http.get("/v1/calls/CA" + "0" * 32)
        bad_call = await http.post("/v1/calls", json={"to": "12"})
        console = await http.get("/console/api/calls")
    assert upload.status_code == 415 and call.status_code == 404 and bad_call.status_code == 422
    assert console.status_code == 200
    async with websockets.connect(ws_url(keyed), subprotocols=["realtime"], additional_headers=bearer(ALPHA)) as ws:
        assert ws.subprotocol == "realtime"
        await talk(ws)


async def test_session_tokens_are_single_use_and_short_lived(keyed):
    token = await mint(keyed, BETA)
    offered = ["realtime", f"telebridge-token.{token}"]
    async with websockets.connect(ws_url(keyed), subprotocols=offered) as ws:
        assert ws.subprotocol == "realtime"  # the token is never echoed back
        await talk(ws)
    assert (await refused(ws_url(keyed), 401, subprotocols=offered))["error"]["code"] == "invalid_session_token"

    token = await mint(keyed, BETA)  # as a query parameter
    async with websockets.connect(ws_url(keyed, f"token={token}"), subprotocols=["realtime"]) as ws:
        await talk(ws)
    await refused(ws_url(keyed, f"token={token}"), 401)

    token = await mint(keyed, BETA)
    await asyncio.sleep(keyed.settings.session_token_ttl + 0.3)
    await refused(ws_url(keyed), 401, subprotocols=["realtime", f"telebridge-token.{token}"])

    token = await mint(keyed, BETA)  # tokens open /v1/realtime and nothing else
    async with httpx.AsyncClient(base_url=keyed.url, headers=bearer(token)) as http:
        assert (await http.post("/v1/voices", json={})).status_code == 401
        assert (await http.post("/v1/realtime/sessions")).status_code == 401
    async with websockets.connect(ws_url(keyed), subprotocols=["realtime"], additional_headers=bearer(token)) as ws:
        await talk(ws)  # ... and may come as a bearer token there


async def test_twilio_routes_need_a_signature_whatever_the_key(keyed):
    async with httpx.AsyncClient(base_url=keyed.url, headers=bearer(ALPHA)) as http:
        voice = await http.post("/twilio/voice", data={"CallSid": "CA" + "1" * 32})
        status = await http.post("/twilio/call-status", data={"CallSid": "CA" + "1" * 32, "CallStatus": "completed"})
    assert voice.status_code == status.status_code == 403
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(f"ws://127.0.0.1:{keyed.port}/twilio/media", additional_headers=bearer(ALPHA)):
            pass
    assert info.value.response.status_code == 403


# --- limits --------------------------------------------------------------------------------------------------


async def test_concurrent_sessions_per_key_and_per_client_while_others_carry_on(keyed):
    client = {"X-Forwarded-For": "198.51.100.20"}  # from the trusted loopback proxy: its own address bucket
    token = await mint(keyed, ALPHA)
    async with websockets.connect(ws_url(keyed), subprotocols=["realtime"], additional_headers={**client, **bearer(ALPHA)}) as a1, \
            websockets.connect(ws_url(keyed, f"token={token}"), subprotocols=["realtime"], additional_headers=client) as a2:
        await talk(a1)
        async with websockets.connect(ws_url(keyed), subprotocols=["realtime"],
                                      additional_headers={**client, **bearer(ALPHA)}) as a3:
            error = await closed_with_error(a3)
        assert error["error"]["type"] == "invalid_request_error" and error["error"]["code"] == "rate_limit_exceeded"
        assert "API key" in error["error"]["message"] and a3.close_code == 1008
        async with websockets.connect(ws_url(keyed), subprotocols=["realtime"],
                                      additional_headers={**client, **bearer(BETA)}) as b1:
            await talk(b1)  # another key from the same address: the third of three
            async with websockets.connect(ws_url(keyed), subprotocols=["realtime"],
                                          additional_headers={"X-Forwarded-For": "198.51.100.20", **bearer(DELTA)}) as d1:
                error = await closed_with_error(d1)
            assert "this client" in error["error"]["message"] and d1.close_code == 1008
            await talk(a1)  # the first session carried on throughout
            await talk(a2)
    await asyncio.sleep(0.5)  # the sessions' slots are released as they end
    async with websockets.connect(ws_url(keyed), subprotocols=["realtime"], additional_headers={**client, **bearer(ALPHA)}) as again:
        await talk(again)


async def test_uploads_per_hour_per_key_and_per_client(keyed):
    upload = {"json": {"file": "not multipart"}}  # every admitted attempt counts, decodable or not
    async with httpx.AsyncClient(base_url=keyed.url) as http:
        here, there = {"X-Forwarded-For": "198.51.100.7"}, {"X-Forwarded-For": "198.51.100.8"}
        codes = [(await http.post("/v1/voices", headers={**here, **bearer(GAMMA)}, **upload)).status_code
                 for _ in range(3)]
        assert codes == [415, 415, 429]  # the key's two per hour
        limited = await http.post("/v1/voices", headers={**here, **bearer(GAMMA)}, **upload)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 3500
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        assert (await http.post("/v1/voices", headers={**here, **bearer(DELTA)}, **upload)).status_code == 415
        assert (await http.post("/v1/voices", headers={**here, **bearer(DELTA)}, **upload)).status_code == 429  # 3/h
        assert (await http.post("/v1/voices", headers={**there, **bearer(DELTA)}, **upload)).status_code == 415


async def test_request_bodies_are_capped(keyed):
    big = {"to": "+14155550100", "from": "+14155550101", "data": {"x": "y" * 5000}}

    async def chunked():
        for _ in range(10):
            yield b"z" * 1000

    async with httpx.AsyncClient(base_url=keyed.url, headers=bearer(ALPHA)) as http:
        declared = await http.post("/v1/calls", json=big)
        streamed = await http.post("/v1/realtime/sessions", content=chunked())
        small = await http.post("/v1/realtime/sessions", json={"model": "any"})
    assert declared.status_code == streamed.status_code == 413 and declared.json()["error"]["code"] == "body_too_large"
    assert small.status_code == 200


# --- origins -------------------------------------------------------------------------------------------------


async def test_origins_same_origin_and_loopback_pages_only(local, keyed):
    evil = {"Origin": "https://evil.example"}
    assert (await refused(ws_url(local), 403, additional_headers=evil))["error"]["code"] == "origin_not_allowed"
    for origin in (f"http://127.0.0.1:{local.port}", "http://localhost:5173"):
        async with websockets.connect(ws_url(local), subprotocols=["realtime"], origin=origin) as ws:
            await talk(ws)
    async with httpx.AsyncClient(base_url=local.url, headers=evil) as http:
        assert (await http.post("/v1/voices", json={})).status_code == 403
        assert (await http.get("/v1/voices")).status_code == 200
    token = await mint(keyed, BETA)  # the origin is checked first: a refused page does not use the token up
    offered = ["realtime", f"telebridge-token.{token}"]
    await refused(ws_url(keyed), 403, subprotocols=offered, additional_headers=evil)
    async with websockets.connect(ws_url(keyed), subprotocols=offered, origin=f"http://127.0.0.1:{keyed.port}") as ws:
        await talk(ws)


# --- no key: loopback only -----------------------------------------------------------------------------------


async def test_without_a_key_only_loopback_clients_get_in(local):
    async with websockets.connect(ws_url(local), subprotocols=["realtime"]) as ws:  # the seed's plain example
        assert ws.subprotocol == "realtime"
        await talk(ws)
    async with httpx.AsyncClient(base_url=local.url) as http:
        assert (await http.post("/v1/voices", json={})).status_code == 415  # admitted
        assert (await http.get("/console/api/calls")).status_code == 200
        assert (await http.post("/v1/calls", json={})).status_code == 404  # off without a key
        assert (await http.post("/v1/realtime/sessions")).status_code == 404
        relayed = [{"X-Forwarded-For": "203.0.113.9"},  # the loopback proxy relays a remote client
                   {"X-Forwarded-For": "127.0.0.1, 203.0.113.9"},  # ... who forged a loopback entry first
                   {"X-Real-IP": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"},  # headers uvicorn ignores
                   {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "voice.example.com"}]  # a proxy, no address
        for headers in relayed:
            for method, path in (("POST", "/v1/voices"), ("GET", "/console"), ("GET", "/metrics")):
                response = await http.request(method, path, headers=headers, json={})
                assert response.status_code == 403, (headers, path, response.status_code)
                assert response.json()["error"]["code"] == "loopback_only"
            assert (await http.get("/v1/voices", headers=headers)).status_code == 200  # reads stay open
    for headers in relayed:
        assert (await refused(ws_url(local), 403, additional_headers=headers))["error"]["code"] == "loopback_only"


async def test_a_forged_forwarded_for_from_an_untrusted_address_is_ignored(local, keyed):
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to connect from")
    forged = {"X-Forwarded-For": "127.0.0.1"}  # the peer is not a trusted proxy: the header is not believed
    async with httpx.AsyncClient(base_url=f"http://{address}:{local.port}") as http:
        assert (await http.post("/v1/voices", headers=forged, json={})).status_code == 403
        assert (await http.get("/v1/voices", headers=forged)).status_code == 200
    await refused(ws_url(local, host=address), 403, additional_headers=forged)
    # Limits count the real peer whatever address it claims: three uploads per client per hour.
    upload = {"json": {"file": "not multipart"}}
    async with httpx.AsyncClient(base_url=f"http://{address}:{keyed.port}") as http:
        codes = [(await http.post("/v1/voices", headers={"X-Forwarded-For": f"198.51.100.{50 + i}", **bearer(key)},
                                  **upload)).status_code for i, key in enumerate((EPSILON, EPSILON, ZETA, ZETA))]
    assert codes == [415, 415, 415, 429], codes
    async with httpx.AsyncClient(base_url=keyed.url) as http:  # from the trusted proxy, the header is believed
        response = await http.post("/v1/voices", headers={"X-Forwarded-For": "198.51.100.60", **bearer(ZETA)}, **upload)
    assert response.status_code == 415


async def test_sessions_end_at_their_maximum_length_and_others_carry_on(local):
    async with websockets.connect(ws_url(local), subprotocols=["realtime"]) as first:
        await talk(first)
        await asyncio.sleep(1.0)
        async with websockets.connect(ws_url(local), subprotocols=["realtime"]) as second:
            await talk(second)
            started = time.monotonic()
            error = await closed_with_error(first)
            assert error["error"]["code"] == "session_expired" and first.close_code == 1008
            assert time.monotonic() - started < 2.5
            await talk(second)  # the later session is unaffected


# --- logs ----------------------------------------------------------------------------------------------------

CLIENT_LOGGERS = ("websockets.client", "httpx", "httpcore")  # the test's own clients, not the server


@pytest.fixture()
def uvicorn_logs_as_served():
    """uvicorn's loggers as ``telebridge serve`` leaves them (propagating, no level of their own): other tests' fake
    servers apply uvicorn's default logging config, which stops them propagating."""
    loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    saved = [(lg.level, lg.propagate, list(lg.handlers)) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.NOTSET)
        lg.propagate, lg.handlers[:] = True, []
    yield
    for lg, (level, propagate, handlers) in zip(loggers, saved):
        lg.setLevel(level)
        lg.propagate, lg.handlers[:] = propagate, handlers


async def test_no_key_or_token_in_any_log_line(keyed, caplog, uvicorn_logs_as_served):
    caplog.set_level(logging.DEBUG)
    secrets = [ALPHA, BETA, "alpha-key-01234567890"]
    async with httpx.AsyncClient(base_url=keyed.url) as http:
        await http.post("/v1/realtime/sessions", headers=bearer("alpha-key-01234567890"))
        await http.get(f"/v1/calls/CA1?token={ALPHA}", headers=bearer(ALPHA))
    tokens = []

    async def fresh() -> str:  # minted just before use: they live for two seconds
        tokens.append(await mint(keyed, BETA))
        return tokens[-1]

    async with websockets.connect(ws_url(keyed), subprotocols=["realtime", f"telebridge-token.{await fresh()}"]) as ws:
        await talk(ws)
    async with websockets.connect(ws_url(keyed, f"token={await fresh()}"), subprotocols=["realtime"]) as ws:
        await talk(ws)
    await refused(ws_url(keyed, f"token={tokens[-1]}"), 401)  # reused: refused, and logged without it
    await refused(ws_url(keyed), 401, additional_headers=bearer(tokens[0]))
    async with websockets.connect(ws_url(keyed), subprotocols=["realtime"], additional_headers=bearer(BETA)) as ws:
        await talk(ws)
    await asyncio.sleep(0.3)
    server_lines = [r.getMessage() for r in caplog.records if not r.name.startswith(CLIENT_LOGGERS)]
    assert any("Sec-WebSocket-Protocol" in line for line in server_lines), "the handshake headers were logged"
    assert any("/v1/realtime" in line for line in server_lines)
    secrets += tokens + [t.removeprefix("tbst_") for t in tokens]
    leaks = [line for line in server_lines if any(secret in line for secret in secrets)]
    assert not leaks, leaks
