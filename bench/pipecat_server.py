"""Pipecat 1.14 as the comparison server of ``cpu_per_call.py``, shaped like its ``twilio-chatbot`` example.

Why: the issue's target is a ratio to Pipecat measured in the same run, with the same load generator and audio,
not a quoted figure. This is Pipecat's Twilio example (``pipecat-examples/twilio-chatbot/inbound``: FastAPI, a
TwiML webhook, a WebSocket route that reads Twilio's ``connected`` + ``start`` with
``parse_telephony_websocket``, ``TwilioFrameSerializer``, ``FastAPIWebsocketTransport``, Silero VAD in the user
context aggregator, ``PipelineParams(audio_in_sample_rate=8000, audio_out_sample_rate=8000, enable_metrics=True,
enable_usage_metrics=True)``, ``WorkerRunner(handle_sigint=False, force_gc=True)``, the task cancelled when the
client disconnects) with the cloud services taken out:

* inbound (default): a no-op processor stands where the LLM and TTS are
  (``input -> user aggregator (Silero VAD) -> no-op -> output -> assistant aggregator``); it also counts the
  caller audio that got through the VAD, so ``/healthz`` can tell how far behind real time the slowest call is
  (``behind_s``: a Pipecat that cannot keep up queues audio, and its CPU figure per wall-clock call-second is then
  a lower bound) and how much caller audio its calls processed (``audio_s``: the bench divides its CPU by that too);
* ``--talk PCM``: after the no-op, a talker stands where the TTS is: it pushes the pre-synthesized monologue
  (8 kHz int16) as ``TTSAudioRawFrame``\\ s in 100 ms chunks at real time with a 0.5 s lead, like a streaming
  cloud TTS (and like ``bench/cloud_fakes.py``), for the whole call: the equivalent of telebridge's talker.

Differences from the example, all of them to measure the same thing as telebridge's bench agents: no STT, LLM,
TTS services (so no STT hop before the aggregator) and no ``AudioBufferProcessor`` (the example records the
whole call in memory); ``auto_hang_up=False`` on the serializer (no Twilio REST call when a call ends); loguru
at WARNING, uvicorn at ``log_level="warning"`` (the example logs DEBUG; telebridge runs the bench at warning);
the webhook answers on ``/twilio/voice`` (where the load generator posts) with a ``ws://`` stream URL (loopback,
no TLS); ``/healthz`` reports the live calls (the bench polls it, as it polls telebridge's). Pipecat's defaults are kept otherwise:
RTVI is added to the pipeline, the user aggregator's default turn strategies (VAD start, Smart Turn v3 stop)
load per call, every call's VAD runs its own ONNX session on its own thread. Like the example's ``uvicorn``
(without the ``standard`` extra) it runs on asyncio's loop; ``BENCH_PIPECAT_LOOP=uvloop`` switches to uvloop.

Runs in ``bench/.venv-pipecat`` (``bench/pipecat_setup.py``), never imports telebridge.
``python bench/pipecat_server.py --port P [--talk monologue.pcm]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from xml.sax.saxutils import quoteattr

import uvicorn
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from loguru import logger
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair, LLMUserAggregatorParams
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner

RATE = 8000


class NoOp(FrameProcessor):
    """Stands where the example's LLM and TTS are: passes every frame on, counting the caller audio."""

    def __init__(self) -> None:
        super().__init__()
        self._first: float | None = None  # when the first caller audio got here
        self._audio_s = 0.0  # caller audio that got here since

    @property
    def audio_s(self) -> float:
        """Seconds of caller audio that got through the VAD to here."""
        return self._audio_s

    def behind_s(self) -> float:
        """How far the caller audio that got through the VAD trails real time (about 0 when keeping up)."""
        return time.monotonic() - self._first - self._audio_s if self._first is not None else 0.0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            if self._first is None:
                self._first = time.monotonic() - frame.num_frames / frame.sample_rate
            self._audio_s += frame.num_frames / frame.sample_rate
        await self.push_frame(frame, direction)


class Talker(FrameProcessor):
    """Stands where the example's TTS is: streams ``pcm`` (8 kHz int16, looped) at real time from the start."""

    def __init__(self, pcm: bytes, chunk_ms: int = 100, lead_s: float = 0.5) -> None:
        super().__init__()
        self._pcm = pcm
        self._chunk = RATE * 2 * chunk_ms // 1000
        self._lead = lead_s
        self._task: asyncio.Task[None] | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame) and self._task is None:
            self._task = self.create_task(self._speak())
        elif isinstance(frame, (EndFrame, CancelFrame)) and self._task is not None:
            await self.cancel_task(self._task)
            self._task = None

    async def _speak(self) -> None:
        loop = asyncio.get_running_loop()
        await self.push_frame(TTSStartedFrame())
        start, pushed, pos = loop.time(), 0.0, 0
        while True:
            chunk = self._pcm[pos : pos + self._chunk]
            pos = pos + self._chunk if pos + self._chunk < len(self._pcm) else 0
            await self.push_frame(TTSAudioRawFrame(audio=chunk, sample_rate=RATE, num_channels=1))
            pushed += len(chunk) / (2 * RATE)
            delay = start + pushed - self._lead - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)


def create_app(talk_pcm: bytes | None) -> FastAPI:
    app = FastAPI()
    live: dict[str, NoOp] = {}

    @app.post("/twilio/voice")
    async def voice(request: Request) -> Response:
        host = request.headers["host"]
        twiml = (f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url={quoteattr(f"ws://{host}/ws")}>'
                 "</Stream></Connect><Pause length=\"20\"/></Response>")
        return Response(twiml, media_type="application/xml")

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        behind = max((meter.behind_s() for meter in live.values()), default=0.0)
        audio = sum(meter.audio_s for meter in live.values())  # (the live calls' caller audio processed so far)
        return JSONResponse({"ok": True, "calls": len(live), "behind_s": behind, "audio_s": audio})

    @app.websocket("/ws")
    async def media(websocket: WebSocket) -> None:
        await websocket.accept()
        _, call_data = await parse_telephony_websocket(websocket)
        call_sid = call_data["call_id"]
        live[call_sid] = meter = NoOp()
        try:
            await run_bot(websocket, call_data["stream_id"], call_sid, meter, talk_pcm)
        finally:
            live.pop(call_sid, None)

    return app


async def run_bot(websocket: WebSocket, stream_sid: str, call_sid: str, noop: NoOp, talk_pcm: bytes | None) -> None:
    serializer = TwilioFrameSerializer(
        stream_sid=stream_sid, call_sid=call_sid, params=TwilioFrameSerializer.InputParams(auto_hang_up=False)
    )
    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True, audio_out_enabled=True, add_wav_header=False, serializer=serializer
        ),
    )
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
        LLMContext(), user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
    )
    middle: list[FrameProcessor] = [user_aggregator, noop]
    if talk_pcm is not None:
        middle.append(Talker(talk_pcm))
    pipeline = Pipeline([transport.input(), *middle, transport.output(), assistant_aggregator])
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(
            audio_in_sample_rate=RATE, audio_out_sample_rate=RATE, enable_metrics=True, enable_usage_metrics=True
        ),
    )

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport: FastAPIWebsocketTransport, client: object) -> None:
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False, force_gc=True)
    await runner.add_workers(worker)
    await runner.run()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--talk", help="8 kHz int16 PCM to stream to every caller (the duplex scenario)")
    args = ap.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    talk = Path(args.talk).read_bytes() if args.talk else None
    loop = "uvloop" if os.environ.get("BENCH_PIPECAT_LOOP") == "uvloop" else "asyncio"
    uvicorn.run(create_app(talk), host="127.0.0.1", port=args.port, log_level="warning", loop=loop)


if __name__ == "__main__":
    main()
