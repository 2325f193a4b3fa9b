"""OpenTelemetry traces (issue 9): a real simulated call exported over OTLP/HTTP to a local receiver that decodes
the protobuf the SDK sends, as a collector would."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from conftest import AUTH_TOKEN, LiveServer, finished_call
from fakes.serve import ThreadedApp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from telebridge.simulator import Say, simulate_call

pytest.importorskip("opentelemetry.sdk", reason="the 'otel' extra is not installed")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

AGENT = str(Path(__file__).parent / "agents" / "voice_agent.py")


class Collector:
    """POST /v1/traces as an OpenTelemetry collector's OTLP/HTTP receiver takes it (binary protobuf)."""

    def __init__(self) -> None:
        self.spans: list = []
        self.resources: list[dict] = []
        self.app = Starlette(routes=[Route("/v1/traces", self.traces, methods=["POST"])])

    async def traces(self, request: Request) -> Response:
        if request.headers.get("content-type") != "application/x-protobuf":
            return Response(status_code=415)
        export = ExportTraceServiceRequest.FromString(await request.body())
        for rs in export.resource_spans:
            self.resources.append({a.key: a.value.string_value for a in rs.resource.attributes})
            for scope in rs.scope_spans:
                self.spans.extend(scope.spans)
        return Response(ExportTraceServiceResponse().SerializeToString(), media_type="application/x-protobuf")


def attrs(span) -> dict:
    out = {}
    for a in span.attributes:
        v = a.value
        out[a.key] = v.string_value or v.int_value or v.double_value
    return out


@pytest.fixture(scope="module")
def collector():
    c = Collector()
    served = ThreadedApp(c.app).start()
    yield c, served.origin
    served.stop()


async def test_a_call_is_traced_conversation_turn_and_stages(collector, monkeypatch):
    c, origin = collector
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", origin)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "telebridge-test")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    server = LiveServer(agent=AGENT, otel_traces=True).start()
    try:
        call = await simulate_call(
            server.url, script=[Say(at=None, text="What are your opening hours?", after_agent_quiet=0.8)],
            auth_token=AUTH_TOKEN, duration=20, end_when_quiet=1.5, transcribe=False,
        )
        record = await finished_call(server, call.call_sid)
    finally:
        server.stop()  # flushes the batch
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(s.name == "conversation" for s in c.spans):
        await asyncio.sleep(0.05)

    conversation = [s for s in c.spans if s.name == "conversation" and attrs(s)["telebridge.call_sid"] == call.call_sid]
    assert len(conversation) == 1, [s.name for s in c.spans]
    conv = conversation[0]
    assert attrs(conv)["telebridge.transport"] == "phone" and attrs(conv)["telebridge.direction"] == "inbound"
    assert attrs(conv)["telebridge.outcome"] == "hung_up"
    assert {"service.name": "telebridge-test"}.items() <= c.resources[0].items()
    turns = [s for s in c.spans if s.name == "turn" and s.parent_span_id == conv.span_id]
    assert len(turns) == len(record.metrics.turns) >= 1
    for turn, row in zip(turns, record.metrics.turns, strict=True):
        assert turn.trace_id == conv.trace_id
        assert conv.start_time_unix_nano <= turn.start_time_unix_nano < turn.end_time_unix_nano <= conv.end_time_unix_nano
        # The turn spans the measured total (end of speech -> first audio out), to within clock-mapping jitter.
        assert abs((turn.end_time_unix_nano - turn.start_time_unix_nano) / 1e9 - row["total"]) < 0.005
        assert attrs(turn)["telebridge.latency.total_s"] == pytest.approx(row["total"], abs=1e-3)
        stages = {s.name: s for s in c.spans if s.parent_span_id == turn.span_id}
        assert set(stages) == {"endpointing", "stt", "llm", "tts"}
        for name, key in (("endpointing", "endpointing"), ("llm", "llm_first_token"), ("tts", "tts_first_audio")):
            span = stages[name]
            assert abs((span.end_time_unix_nano - span.start_time_unix_nano) / 1e9 - row[key]) < 0.005, name
            assert turn.start_time_unix_nano - 5e6 <= span.start_time_unix_nano <= turn.end_time_unix_nano + 5e6
    # No phone number anywhere in what was exported.
    for span in c.spans:
        assert not any("+1" in str(v) for v in attrs(span).values()), attrs(span)
