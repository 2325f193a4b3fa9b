"""The console's sans-I/O parts with synthetic time: the live-call hub, its feed, login sessions, the access
decision for /console and /metrics, transfer numbers and recordings read back as past calls."""

from __future__ import annotations

import json

import pytest
from starlette.datastructures import Headers

from telebridge.console.auth import COOKIE, ConsoleAuth
from telebridge.console.feed import ConsoleFeed
from telebridge.console.hub import ConsoleHub, Subscription
from telebridge.console.stats import MinuteBuckets
from telebridge.console.recordings import find_recording, list_recordings, recording_detail
from telebridge.console.routes import e164
from telebridge.pipeline.observer import ConversationObserver, Observers
from telebridge.recording import Recorder
from telebridge.security.guard import Access, Guard, Refusal
from telebridge.security.keys import KeyRing
from telebridge.security.policy import CONSOLE, CONSOLE_PAGE, METRICS, policy_for
from telebridge.settings import Settings

T0 = 1_700_000_040.0  # a minute boundary + 40 s


def events_of(sub: Subscription, kind: str | None = None) -> list[dict]:
    return [e for e in sub.take() if kind is None or e["type"] == kind]


def a_call(hub: ConsoleHub, call_id: str = "CA1", now: float = T0, **kw):
    return hub.open(call_id, now, transport="phone", direction="inbound", number="+14155550123", agent="demo", **kw)


# --- the hub --------------------------------------------------------------------------------------------------
def test_a_turn_goes_listening_caller_speaking_thinking_speaking_listening():
    hub = ConsoleHub()
    sub = hub.subscribe()
    call = a_call(hub)
    assert call.number == "+*******0123" and call.state == "listening"
    states = []

    def step(fn, *args):
        fn("CA1", *args)
        states.append(hub.live["CA1"].state)

    step(hub.speech_started, T0 + 1)
    step(hub.speech_stopped, T0 + 2)
    hub.caller_said("CA1", T0 + 2.3, "What are your opening hours?")
    step(hub.reply_started, T0 + 2.4, 3)
    hub.reply_text("CA1", T0 + 2.6, 3, "We open at nine.")
    latency = {"endpointing": 0.4, "stt": 0.2, "llm_first_token": 0.3, "tts_first_audio": 0.15, "send": 0.01,
               "total": 0.86}
    step(hub.reply_audible, T0 + 2.9, 3, latency)
    hub.reply_text("CA1", T0 + 3.0, 3, "Until five.")
    hub.reply_heard("CA1", T0 + 3.0, 3, 0.95)
    step(hub.reply_done, T0 + 5.0, 3, "We open at nine. Until five.")
    assert states == ["caller speaking", "listening", "thinking", "speaking", "listening"]

    detail = hub.live["CA1"].detail(T0 + 6)
    caller, agent = detail["transcript"]
    assert (caller["who"], caller["text"], caller["t"]) == ("caller", "What are your opening hours?", 2.3)
    assert (agent["who"], agent["text"], agent["state"], agent["turn"]) == ("agent", "We open at nine. Until five.",
                                                                            "done", 3)
    (row,) = detail["latency"]
    assert row == {"turn": 3, "t": 2.9, "endpointing": 0.4, "stt": 0.2, "llm_first_token": 0.3,
                   "tts_first_audio": 0.15, "send": 0.01, "total": 0.86, "heard": 0.95}
    assert detail["turns"] == 1 and detail["duration"] == 6.0 and detail["live"]
    kinds = [e["kind"] for e in detail["timeline"]]
    assert kinds == ["started", "caller_start", "caller_stop", "reply_start", "agent_start", "agent_stop"]

    sent = sub.take()
    assert sent[0]["type"] == "call" and sent[0]["call"]["number"] == "+*******0123"
    latency_events = [e["row"] for e in sent if e["type"] == "latency"]
    assert [r["heard"] for r in latency_events] == [None, 0.95]  # the row arrives, then its heard figure
    agent_updates = [e["entry"]["text"] for e in sent if e["type"] == "entry" and e["entry"]["who"] == "agent"]
    assert agent_updates == ["", "We open at nine.", "We open at nine.", "We open at nine. Until five.",
                             "We open at nine. Until five."]  # the reply's words grow as they are spoken


def test_barge_in_pause_resume_dtmf_and_dropped_replies_are_marked():
    hub = ConsoleHub()
    a_call(hub)
    hub.reply_started("CA1", T0 + 1, 1)
    hub.reply_audible("CA1", T0 + 1.5, 1, None)  # a greeting: no latency row
    hub.speech_started("CA1", T0 + 2)
    hub.reply_paused("CA1", T0 + 2.2, 1)
    assert hub.live["CA1"].state == "paused"
    hub.reply_resumed("CA1", T0 + 3.5, 1)
    hub.speech_stopped("CA1", T0 + 3.5)
    assert hub.live["CA1"].state == "speaking"
    hub.speech_started("CA1", T0 + 4)
    hub.reply_paused("CA1", T0 + 4.2, 1)
    hub.reply_interrupted("CA1", T0 + 4.8, 1, "Hello, this is…")
    assert hub.live["CA1"].state == "caller speaking"
    hub.speech_stopped("CA1", T0 + 5)
    hub.reply_started("CA1", T0 + 5.5, 2)
    hub.reply_dropped("CA1", T0 + 5.9, 2)  # the caller went on: the reply is gone without a trace
    hub.dtmf("CA1", T0 + 7, "5")
    hub.ending("CA1", T0 + 8, "end_call")
    call = hub.live["CA1"]
    assert call.state == "ending" and call.turns == 0 and not call.latency
    shown = [(e["who"], e.get("kind"), e.get("state"), e["text"]) for e in call.entries]
    assert shown == [
        ("agent", None, "cut", "Hello, this is…"),
        ("event", "paused", None, "caller speech over the agent: paused"),
        ("event", "resumed", None, "not an interruption: the agent resumed"),
        ("event", "paused", None, "caller speech over the agent: paused"),
        ("event", "barge_in", None, "the caller barged in"),
        ("event", "dtmf", None, "key 5"),
        ("event", "ending", None, "call ending: end_call"),
    ]


def test_closed_calls_move_to_a_bounded_history_with_their_outcome():
    hub = ConsoleHub(history=2)
    sub = hub.subscribe()
    for n in range(3):
        a_call(hub, f"CA{n}", T0 + n)
        hub.close(f"CA{n}", T0 + n + 30.25, "hung_up" if n else "end_call")
    assert not hub.live and [c.id for c in hub.history] == ["CA1", "CA2"]
    ended = events_of(sub, "ended")
    assert [(e["call"]["id"], e["call"]["outcome"], e["call"]["duration"]) for e in ended] == [
        ("CA0", "end_call", 30.2), ("CA1", "hung_up", 30.2), ("CA2", "hung_up", 30.2)]
    snap = hub.snapshot(T0 + 100)
    assert snap["live"] == [] and [c["id"] for c in snap["past"]] == ["CA2", "CA1"]  # newest first
    assert hub.find("CA1").outcome == "hung_up" and hub.find("CA0") is None
    hub.close("CA9", T0, "hung_up")  # unknown: nothing happens
    hub.caller_said("CA9", T0, "hello")


def test_a_slow_subscriber_is_dropped_and_never_blocks_the_others():
    hub = ConsoleHub()
    woken = []
    slow = hub.subscribe(notify=lambda: woken.append("slow"), limit=5)
    fast = hub.subscribe()
    a_call(hub)
    for i in range(10):
        hub.caller_said("CA1", T0 + i, f"words {i}")
    assert slow.dropped and slow not in hub.subscribers and not slow.queue and woken[-1] == "slow"
    assert len(events_of(fast, "entry")) == 10
    # Level readings replace the one still queued: a watcher that reads slowly gets the newest, not a backlog.
    for i in range(50):
        hub.levels(T0 + i, {"CA1": (0.01 * i, 0.0), "CA-gone": (1.0, 1.0)})
    levels = events_of(fast, "levels")
    assert levels == [{"type": "levels", "levels": {"CA1": [0.49, 0.0]}}]


def test_numbers_are_masked_in_transcripts_and_text_is_bounded():
    hub = ConsoleHub()
    a_call(hub)
    hub.caller_said("CA1", T0 + 1, "call me back on +1 415 555 0199 please")
    hub.caller_said("CA1", T0 + 2, "x" * 5000)
    hub.caller_said("CA1", T0 + 3, "   ")  # nothing said: no entry
    first, long = hub.live["CA1"].entries
    assert "555 0199" not in first["text"] and "0199" in first["text"]
    assert len(long["text"]) == 2000


def test_minute_buckets_give_percentiles_and_peak_concurrency_for_the_last_hour():
    b = MinuteBuckets(minutes=60)
    minute0 = int(T0 // 60) * 60
    b.calls(1, minute0 + 5)
    b.calls(2, minute0 + 10)
    b.calls(1, minute0 + 50)
    for i in range(1, 101):
        b.latency(i / 100, minute0 + 20)
    # Three quiet minutes later one call is still live; then a turn.
    b.latency(0.7, minute0 + 4 * 60 + 1)
    series = b.series(minute0 + 4 * 60 + 30)
    assert len(series) == 60 and series[-1]["t"] == minute0 + 4 * 60
    m0, m1, m2, m3, m4 = series[-5:]
    assert (m0["calls"], m0["turns"], m0["p50"], m0["p90"], m0["p99"]) == (2, 100, 0.5, 0.9, 0.99)
    assert [m["calls"] for m in (m1, m2, m3, m4)] == [1, 1, 1, 1]  # the level carries across quiet minutes
    assert m1["p50"] is None and m4["p50"] == 0.7 and m4["turns"] == 1
    later = b.series(minute0 + 70 * 60)  # an hour on: the old minutes are gone, the level remains
    assert all(m["turns"] == 0 for m in later) and all(m["calls"] == 1 for m in later)


# --- the feed: one more observer on every call ---------------------------------------------------------------
def test_the_feed_follows_a_call_next_to_its_other_observers_even_when_one_fails():
    hub = ConsoleHub()
    a_call(hub)
    now = [T0]

    class Broken(ConversationObserver):
        def user_transcript(self, text: str) -> None:
            raise RuntimeError("recording disk full")

    class Old:  # an observer without the newer hooks
        def __init__(self):
            self.seen = []

        def user_transcript(self, text):
            self.seen.append(text)

    old = Old()
    both = Observers(Broken(), old, ConsoleFeed(hub, "CA1", clock=lambda: now[0]))
    now[0] = T0 + 1.5
    both.user_speech_started(1.2)
    both.user_transcript("hello there")
    both.reply_started(1)
    both.reply_audible(1, {"total": 0.5, "endpointing": 0.2})
    both.reply_heard(1, 0.6)
    both.dtmf("#")
    both.call_ending("silence")
    call = hub.live["CA1"]
    assert old.seen == ["hello there"]
    assert [e["text"] for e in call.entries] == ["hello there", "", "key #", "call ending: silence"]
    assert call.latency[0]["heard"] == 0.6 and call.latency[0]["t"] == 1.5


# --- who may use the console ---------------------------------------------------------------------------------
def settings(**kw) -> Settings:
    return Settings(_env_file=None, **kw)


def test_sessions_are_signed_expire_and_end_when_a_credential_changes():
    auth = ConsoleAuth.from_settings(settings(console_token="tok-123", api_keys="k-one,k-two",
                                              console_session_hours=1), KeyRing(["k-one", "k-two"]))
    assert auth.configured
    assert (auth.match("tok-123"), auth.match("k-two"), auth.match("tok-1234"), auth.match("")) == (
        "console", "key2", None, None)
    cookie = auth.issue("console", T0)
    assert "tok-123" not in cookie and auth.verify(cookie, T0 + 3599) == "console"
    assert auth.verify(cookie, T0 + 3600) is None  # expired
    body, _, mac = cookie.rpartition(".")
    forged = body.replace(".console.", ".key1.") + "." + mac
    stretched = ".".join(body.split(".")[:2] + [str(int(T0) + 10**6)] + body.split(".")[3:]) + "." + mac
    assert auth.verify(forged, T0) is None and auth.verify(stretched, T0) is None
    assert auth.verify("v1.console.99999999999.x.y", T0) is None and auth.verify("a" * 300, T0) is None
    rotated = ConsoleAuth.from_settings(settings(console_token="tok-456", api_keys="k-one,k-two"),
                                        KeyRing(["k-one", "k-two"]))
    assert rotated.verify(cookie, T0) is None
    assert ConsoleAuth.cookie_of(f"a=b; {COOKIE}={cookie}; c=d") == cookie and ConsoleAuth.cookie_of(None) is None
    assert not ConsoleAuth.from_settings(settings(), KeyRing([])).configured


@pytest.mark.parametrize("path, method, policy", [
    ("/console", "GET", CONSOLE_PAGE), ("/console/", "HEAD", CONSOLE_PAGE), ("/console/static/app.js", "GET", CONSOLE_PAGE),
    ("/console/phone", "GET", CONSOLE_PAGE), ("/console/login", "POST", CONSOLE_PAGE),
    ("/console/api/calls", "GET", CONSOLE), ("/console/api/events", "GET", CONSOLE),
    ("/console/api/calls/CA1/hangup", "POST", CONSOLE), ("/console/login", "GET", CONSOLE),
    ("/console/phone/session", "POST", CONSOLE), ("/console/static/x", "POST", CONSOLE), ("/metrics", "GET", METRICS),
])
def test_console_paths_and_their_doors(path, method, policy):
    assert policy_for(path, method) == policy


class Clock:
    t = T0

    def __call__(self) -> float:
        return self.t


def check(guard: Guard, path: str, method: str = "GET", client: str = "127.0.0.1", **headers: str):
    return guard.check(policy_for(path, method), Headers(headers), client)


def test_with_nothing_configured_the_console_and_metrics_answer_loopback_only():
    guard = Guard(settings())
    for path in ("/console", "/console/api/calls", "/metrics"):
        assert check(guard, path) == Access("loopback", None, "127.0.0.1")
        for refused in (check(guard, path, client="203.0.113.9"),
                        check(guard, path, **{"x-forwarded-for": "203.0.113.9"})):
            assert isinstance(refused, Refusal) and refused.status == 403 and refused.code == "loopback_only"
            assert "TELEBRIDGE_CONSOLE_TOKEN" in refused.message


def test_a_token_or_key_or_login_cookie_opens_the_console_from_anywhere():
    clock = Clock()
    guard = Guard(settings(console_token="tok-123", api_keys="k-one", console_session_hours=1), clock=clock)
    far = "203.0.113.9"
    assert check(guard, "/console", client=far) == Access("open", None, far)  # the page itself: no data
    assert check(guard, "/console/static/app.js", client=far).via == "open"
    for path in ("/console/api/calls", "/console/api/events", "/metrics"):
        refused = check(guard, path, client=far)
        assert isinstance(refused, Refusal) and refused.status == 401 and refused.code == "unauthorized", path
        assert check(guard, path, client=far, authorization="Bearer tok-123") == Access("console", "console", far)
        assert check(guard, path, client=far, authorization="Bearer k-one") == Access("key", "key1", far)
        wrong = check(guard, path, client=far, authorization="Bearer tok-12")
        assert isinstance(wrong, Refusal) and wrong.status == 401 and wrong.code == "invalid_api_key"
    cookie = f"{COOKIE}={guard.console.issue('console', clock.t)}"
    assert check(guard, "/console/api/calls", client=far, cookie=cookie) == Access("session", "console", far)
    assert isinstance(check(guard, "/metrics", client=far, cookie=cookie), Refusal)  # the cookie is for /console
    clock.t += 3600
    expired = check(guard, "/console/api/calls", client=far, cookie=cookie)
    assert isinstance(expired, Refusal) and expired.code == "session_expired"
    assert check(guard, "/console", client=far, cookie=cookie).via == "open"  # the page still loads: to log in
    other = check(guard, "/console/api/calls", client=far, origin="https://evil.example", authorization="Bearer k-one")
    assert isinstance(other, Refusal) and other.code == "origin_not_allowed"


async def test_failed_logins_are_limited_per_address():
    clock = Clock()
    guard = Guard(settings(console_token="tok-123"), clock=clock)
    assert await guard.console_login("tok-123", "198.51.100.1") == "console"
    for _ in range(20):
        refused = await guard.console_login("guess", "198.51.100.1")
        assert isinstance(refused, Refusal) and refused.status == 401
    limited = await guard.console_login("tok-123", "198.51.100.1")
    assert isinstance(limited, Refusal) and limited.status == 429 and limited.retry_after
    assert await guard.console_login("tok-123", "198.51.100.2") == "console"  # another address is not affected
    clock.t += 61
    assert await guard.console_login("tok-123", "198.51.100.1") == "console"


# --- transfer numbers ---------------------------------------------------------------------------------------
def test_transfer_targets_must_be_valid_international_numbers():
    assert e164(" +1 415 555 0123 ") == "+14155550123" and e164("+442079460958") == "+442079460958"
    for bad, words in (("4155550123", "international form"), ("+1555", "not a valid"), ("+1 abc", "not a phone"),
                       ("+15557654321", "not a valid")):
        with pytest.raises(ValueError, match=words):
            e164(bad)


# --- past calls from their recordings -----------------------------------------------------------------------
def test_recordings_read_back_as_past_calls(tmp_path):
    rec = Recorder(tmp_path).session("CA" + "7" * 32, transport="phone", agent="demo", audio_format="g711_ulaw")
    rec.set_consent(True)
    rec.server({"type": "input_audio_buffer.speech_started", "audio_start_ms": 100})
    rec.server({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900})
    rec.server({"type": "conversation.item.input_audio_transcription.completed", "transcript": "Call +14155550188"})
    rec.server({"type": "response.created", "response": {}})
    rec.server({"type": "response.audio.delta", "delta": "AAAA"})
    rec.server({"type": "unmute.interrupted_by_vad"})
    rec.server({"type": "response.text.done", "text": "Sure, I"})
    rec.close()
    (tmp_path / "20000101T000000Z_junk.jsonl").write_text("not json\n")
    (listed,) = list_recordings(tmp_path)
    assert listed["id"] == "CA" + "7" * 32 and listed["source"] == "recording" and listed["outcome"] == "recorded"
    path = find_recording(tmp_path, "CA" + "7" * 32)
    assert path is not None and find_recording(tmp_path, "CA7") is None and find_recording(tmp_path, "../x") is None
    detail = recording_detail(path)
    assert [(e["who"], e["text"]) for e in detail["transcript"]] == [
        ("caller", "Call +*******0188"), ("event", "the caller barged in"), ("agent", "Sure, I")]
    assert [e["kind"] for e in detail["timeline"]] == ["caller_start", "caller_stop", "reply_start", "agent_start",
                                                        "barge_in", "agent_stop"]
    json.dumps(detail)
    assert list_recordings(None) == [] and list_recordings(tmp_path / "missing") == []


def test_a_finished_call_is_compacted_for_the_history() -> None:
    """A long call keeps its newest transcript entries and timeline events in the history, each entry shorter."""
    from telebridge.console.hub import HISTORY_ENTRIES, HISTORY_TEXT, HISTORY_TIMELINE

    hub = ConsoleHub(history=5)
    hub.open("CAlong", T0, number="+15550000123")
    for i in range(300):
        hub.speech_started("CAlong", T0 + i)
        hub.speech_stopped("CAlong", T0 + i + 0.5)
        hub.caller_said("CAlong", T0 + i + 0.6, f"question {i} " + "x" * 1500)
    live = hub.live["CAlong"]
    assert len(live.entries) == 300 and len(live.timeline) == 601 and len(live.entries[-1]["text"]) > HISTORY_TEXT
    hub.close("CAlong", T0 + 400, "hung_up")
    (past,) = hub.history
    assert len(past.entries) == HISTORY_ENTRIES and len(past.timeline) == HISTORY_TIMELINE
    assert past.entries[-1]["text"].startswith("question 299") and len(past.entries[-1]["text"]) == HISTORY_TEXT
    assert past.timeline[-1]["kind"] == "ended" and hub.find("CAlong") is past
