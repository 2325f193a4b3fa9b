"""GET /metrics (issue 9): the series after a real simulated call, who may read them, and multiprocess mode."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from conftest import LiveServer, finished_call
from prometheus_client.parser import text_string_to_metric_families

from telebridge.metrics import LAG_SAMPLE_EVERY, render
from telebridge.simulator import Say, simulate_call

AGENT = str(Path(__file__).parent / "agents" / "voice_agent.py")
KEY = "metrics-key-0123456789"
INTERRUPTION = "Sorry, can you stop for a second? I have a question about my appointment."
STAGES = ("endpointing", "stt", "llm_first_token", "tts_first_audio", "total")


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample: (name, sorted labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(url: str, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url) as http:
        return await http.get("/metrics", **kwargs)


async def test_metrics_after_a_simulated_call(quick_server, auth_token):
    server = quick_server  # the short-spoken agent: its answer is still long enough to be barged into
    before = await scrape(server.url)
    assert before.status_code == 200 and before.headers["content-type"].startswith("text/plain")
    b = parse(before.text)
    call = await simulate_call(
        server.url,
        script=[Say(at=None, text="What are your opening hours?", after_agent_quiet=0.8),
                Say(at=None, text=INTERRUPTION, after_agent_speech=1.5)],
        auth_token=auth_token, duration=35, end_when_quiet=1.5, transcribe=False,
    )
    record = await finished_call(server, call.call_sid)
    after = await scrape(server.url)
    text, a = after.text, parse(after.text)

    def delta(name: str, **labels: str) -> float:
        return value(a, name, **labels) - value(b, name, **labels)

    # The call: counted as finished (the simulator hung up), and no longer active.
    assert delta("telebridge_calls_total", transport="phone", direction="inbound", outcome="hung_up") == 1, text
    assert value(a, "telebridge_calls_active", transport="phone", direction="inbound") == 0
    # Every answered turn has one observation per stage; "total" is the heard latency, from the echoed marks.
    turns = record.metrics.turns
    assert turns, "the call had answered turns"
    for stage in STAGES:
        assert delta("telebridge_turn_latency_seconds_count", stage=stage) == len(turns), stage
    sent_total = sum(row["total"] for row in turns)
    heard_total = delta("telebridge_turn_latency_seconds_sum", stage="total")
    # Heard = sent + the trip to the listener's playback: sub-second on loopback, and never earlier than sent
    # beyond the simulator's 20 ms playback ticks (it echoes marks on frame boundaries).
    assert sent_total - 0.03 * len(turns) <= heard_total <= sent_total + 0.5 * len(turns), (heard_total, turns)
    assert 0.05 < heard_total / len(turns) < 5.0
    for stage in ("endpointing", "llm_first_token", "tts_first_audio"):
        mean = delta("telebridge_turn_latency_seconds_sum", stage=stage) / len(turns)
        assert 0.0 <= mean < 3.0, (stage, mean)
    # Turn-taking: the caller barged into the answer.
    interrupts, resumes = record.metrics.count("interrupt"), record.metrics.count("resume")
    assert interrupts >= 1, record.metrics.events
    assert delta("telebridge_interruptions_total", kind="confirmed") == interrupts
    assert delta("telebridge_interruptions_total", kind="resumed") == resumes
    barge_ins = delta("telebridge_barge_in_seconds_count")
    assert barge_ins >= 1
    assert 0.1 < delta("telebridge_barge_in_seconds_sum") / barge_ins < 3.0
    # The VAD hub: batches of one stream (a single call), frame lag sampled and small on an idle machine.
    assert delta("telebridge_vad_batch_size_count") > 100 and delta("telebridge_vad_batch_size_sum") > 0
    lags = delta("telebridge_frame_lag_seconds_count")
    assert lags >= delta("telebridge_vad_batch_size_count") // LAG_SAMPLE_EVERY - 1 and lags > 0
    assert delta("telebridge_frame_lag_seconds_sum") / lags < 0.5
    # No provider failed (the family is declared all the same), and the standard collectors are there.
    assert "# TYPE telebridge_provider_errors_total counter" in text or "# TYPE telebridge_provider_errors counter" in text
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
        assert value(a, name) > 0, name
    assert any(key[0] == "python_info" for key in a)
    assert any(key[0] == "python_gc_objects_collected_total" for key in a)


async def test_provider_errors_are_counted_from_provider_health(server):
    health = server.runtime.provider_health
    before = parse((await scrape(server.url)).text)
    health.error("deepgram", "timeout", "no audio")
    health.error("deepgram", "Rate Limited!", "429")
    after = parse((await scrape(server.url)).text)
    d = lambda **labels: value(after, "telebridge_provider_errors_total", **labels) - value(  # noqa: E731
        before, "telebridge_provider_errors_total", **labels)
    assert d(provider="deepgram", kind="timeout") == 1
    assert d(provider="deepgram", kind="rate_limited_") == 1  # labels stay a bounded, well-formed set
    assert health.snapshot()["deepgram"]["errors"] >= 2


# --- who may read /metrics ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed():
    srv = LiveServer(agent=AGENT, api_keys=KEY)
    srv.start()
    yield srv
    srv.stop()


async def test_metrics_need_the_key_when_keys_are_configured(keyed):
    missing = await scrape(keyed.url)
    wrong = await scrape(keyed.url, headers={"Authorization": "Bearer not-the-key"})
    in_query = await scrape(keyed.url, params={"api_key": KEY})
    for response in (missing, wrong, in_query):
        assert response.status_code == 401 and "telebridge_" not in response.text
    ok = await scrape(keyed.url, headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200 and "telebridge_calls_active" in ok.text


async def test_metrics_are_loopback_only_without_a_key(server):
    assert (await scrape(server.url)).status_code == 200  # a loopback client
    # The trusted loopback proxy relays a remote client; other forwarding headers count as a remote client too.
    for headers in ({"X-Forwarded-For": "203.0.113.9"}, {"X-Real-IP": "203.0.113.9"}, {"Forwarded": "for=1.2.3.4"}):
        response = await scrape(server.url, headers=headers)
        assert response.status_code == 403, headers
        assert response.json()["error"]["code"] == "loopback_only" and "telebridge_" not in response.text


# --- several worker processes ---------------------------------------------------------------------------------

WORKER = textwrap.dedent("""
    import sys
    from telebridge import metrics

    class Call:
        custom_data = {"Direction": "outbound-api"}
        ended_reason = "end_call"
        engine = object()

    metrics.call_started(Call())  # still live when this worker stops (or crashes)
    if sys.argv[1] == "finish-one":
        metrics.call_ended(metrics.call_started(Call()), Call())
    metrics.turn_latency(None, 1, 0.0, {"total": 0.5, "endpointing": 0.2, "stt": 0.1, "llm_first_token": 0.1,
                                        "tts_first_audio": 0.15, "send": 0.01})
    metrics.provider_error("deepgram", "timeout")
    metrics.vad_pass(metrics.LAG_SAMPLE_EVERY, 3, lambda: [0.01, 0.02, 0.03])
    print("ready", flush=True)
    if sys.argv[2] == "stay":
        sys.stdin.read()
""")


def test_multiprocess_mode_sums_the_workers(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    cwd = str(Path(__file__).parent.parent)
    live = subprocess.Popen([sys.executable, "-c", WORKER, "one", "stay"], env=env, cwd=cwd, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert live.stdout.readline().strip() == "ready"
        gone = subprocess.run([sys.executable, "-c", WORKER, "finish-one", "exit"], env=env, cwd=cwd, text=True,
                              capture_output=True, timeout=60)
        assert gone.returncode == 0 and gone.stdout.strip() == "ready", gone.stderr
        assert {p.name.split("_")[0] for p in tmp_path.glob("*.db")} >= {"counter", "histogram", "gauge"}

        samples = parse(render(str(tmp_path)).decode())
        # Counters and histograms: both workers, the exited one included.
        assert value(samples, "telebridge_calls_total", transport="phone", direction="outbound",
                     outcome="end_call") == 1
        assert value(samples, "telebridge_turn_latency_seconds_count", stage="total") == 2
        assert value(samples, "telebridge_turn_latency_seconds_sum", stage="total") == pytest.approx(1.0)
        assert value(samples, "telebridge_provider_errors_total", provider="deepgram", kind="timeout") == 2
        assert value(samples, "telebridge_vad_batch_size_count") == 2
        assert value(samples, "telebridge_frame_lag_seconds_count") == 6
        # Live calls: the exited worker's unfinished call does not linger; the live worker's does.
        assert value(samples, "telebridge_calls_active", transport="phone", direction="outbound") == 1
        # process_* of every live worker, told apart by pid; none for the exited one.
        pids = {dict(labels).get("pid") for (name, labels) in samples if name == "process_resident_memory_bytes"}
        assert pids == {str(live.pid)}
        assert value(samples, "process_resident_memory_bytes", pid=str(live.pid)) > 0
    finally:
        live.stdin.close()
        live.wait(timeout=30)
    samples = parse(render(str(tmp_path)).decode())
    assert value(samples, "telebridge_calls_active", transport="phone", direction="outbound") == 0
    assert not any(name.startswith("process_") for name, _ in samples)
    assert value(samples, "telebridge_calls_total", transport="phone", direction="outbound", outcome="end_call") == 1
