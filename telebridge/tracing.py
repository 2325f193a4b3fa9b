"""Optional OpenTelemetry traces: one ``conversation`` span per call, one ``turn`` span per answered turn, and
under each turn ``endpointing``, ``stt``, ``llm`` and ``tts`` spans placed at the instants the pipeline measured.

Off unless ``TELEBRIDGE_OTEL_TRACES=true``, and free when off (every hook returns at once). When on:

- a tracer provider already installed in the process (``opentelemetry-instrument``, or the embedding program's
  own set-up) is used as it is;
- otherwise, with ``opentelemetry-sdk`` and ``opentelemetry-exporter-otlp-proto-http`` installed (the ``otel``
  extra), telebridge installs one that batches spans to an OTLP/HTTP collector named by the standard variables
  (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME``, ``OTEL_BSP_*``, ...);
- without the packages, one error line says what to install and calls run untraced.

Turn spans are written after the fact (the pipeline measures ``time.perf_counter()`` instants; they are mapped to
wall-clock nanoseconds here), so tracing adds nothing to the audio path. Spans carry the call SID, direction,
transport and latency figures -- never a phone number or a transcript.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from typing import Any

log = logging.getLogger("telebridge.tracing")

__all__ = ["configure", "shutdown", "call_started", "call_ended", "turn_measured", "enabled"]

_tracer: Any = None
_own_provider: Any = None  # the provider telebridge installed (flushed at shutdown), if it installed one
_spans: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()  # call -> its conversation span


def enabled() -> bool:
    return _tracer is not None


def configure(on: bool) -> bool:
    """Set tracing up once per process (later calls reuse it). Returns whether calls will be traced."""
    global _tracer, _own_provider
    if not on or _tracer is not None:
        return _tracer is not None
    try:
        from opentelemetry import trace
    except ImportError:
        log.error("TELEBRIDGE_OTEL_TRACES is on but OpenTelemetry is not installed "
                  "(pip install 'telebridge[otel]'): calls are not traced")
        return False
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):  # nobody installed one: an OTLP/HTTP exporter
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            log.error("TELEBRIDGE_OTEL_TRACES is on but the OpenTelemetry SDK or its OTLP/HTTP exporter is missing "
                      "(pip install 'telebridge[otel]'): calls are not traced")
            return False
        service = os.environ.get("OTEL_SERVICE_NAME") or "telebridge"
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        _own_provider = provider
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4318"
        log.info("OpenTelemetry traces go to %s over OTLP/HTTP", endpoint.split("?")[0])
    _tracer = trace.get_tracer("telebridge")
    return True


def shutdown() -> None:
    """The server is stopping: flush what is batched, and trace nothing more until :func:`configure` again."""
    global _tracer
    _tracer = None
    _spans.clear()
    if _own_provider is not None:
        try:
            _own_provider.force_flush(timeout_millis=5000)
        except Exception:  # an unreachable collector must not hold up a shutdown
            log.debug("flushing traces failed", exc_info=True)


def _wall_ns(perf: float) -> int:
    """A ``time.perf_counter()`` instant as wall-clock nanoseconds since the epoch."""
    return time.time_ns() - int((time.perf_counter() - perf) * 1e9)


def _call_attributes(call: Any, transport: str, direction: str) -> dict[str, Any]:
    attrs = {
        "telebridge.call_sid": str(getattr(call, "call_id", "")),
        "telebridge.transport": transport,
        "telebridge.direction": direction,
    }
    agent = getattr(getattr(call, "agent", None), "id", None)
    if agent:
        attrs["telebridge.agent"] = str(agent)
    return attrs


def call_started(call: Any, labels: tuple[str, str]) -> None:
    """``labels``: the call's (transport, direction), as the metrics name them."""
    if _tracer is None:
        return
    try:
        _spans[call] = _tracer.start_span("conversation", attributes=_call_attributes(call, *labels))
    except Exception:
        log.debug("starting a conversation span failed", exc_info=True)


def call_ended(call: Any, outcome: str) -> None:
    span = _spans.pop(call, None) if _tracer is not None else None
    if span is None:
        return
    try:
        span.set_attribute("telebridge.outcome", outcome)
        span.set_attribute("telebridge.turns", len(getattr(getattr(call, "metrics", None), "turns", ()) or ()))
        span.end()
    except Exception:
        log.debug("ending a conversation span failed", exc_info=True)


def turn_measured(call: Any, turn_id: int, timings: dict[str, float], row: dict[str, float]) -> None:
    """An answered turn's first audio went out: its span and its stages' spans, at the measured instants.

    ``timings`` holds ``time.perf_counter()`` instants (``speech_end``, ``start``, ``llm_first_token``,
    ``tts_first_audio``, ``first_audio``) and ``stt``, a duration; ``row`` the latency split (seconds).
    """
    parent = _spans.get(call) if _tracer is not None else None
    if parent is None:
        return
    try:
        from opentelemetry import trace

        speech_end, start, first_audio = timings["speech_end"], timings["start"], timings["first_audio"]
        llm_first = timings.get("llm_first_token", start)
        tts_first = timings.get("tts_first_audio", first_audio)
        turn = _tracer.start_span(
            "turn", context=trace.set_span_in_context(parent), start_time=_wall_ns(speech_end),
            attributes={"telebridge.call_sid": str(getattr(call, "call_id", "")), "telebridge.turn": turn_id,
                        **{f"telebridge.latency.{k}_s": round(float(v), 4) for k, v in row.items()}})
        inside = trace.set_span_in_context(turn)
        stages = (
            ("endpointing", speech_end, start, {}),
            ("stt", start - float(timings.get("stt", 0.0)), start, {}),
            ("llm", start, llm_first, {"telebridge.measures": "time to first token"}),
            ("tts", llm_first, tts_first, {"telebridge.measures": "time to first audio"}),
        )
        for name, begin, end, attrs in stages:
            if end >= begin:
                _tracer.start_span(name, context=inside, start_time=_wall_ns(begin),
                                   attributes=attrs).end(end_time=_wall_ns(end))
        turn.end(end_time=_wall_ns(first_audio))
    except Exception:
        log.debug("recording a turn span failed", exc_info=True)
