"""Tests for the sans-I/O Twilio Media Streams codec (telebridge.twilio.stream)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telebridge.twilio import messages
from telebridge.twilio import stream as codec
from telebridge.simulator.wire import (
    ServerClear,
    ServerMark,
    ServerMedia,
    TwilioProtocolError,
    decode_server_message,
    twilio_connected,
    twilio_dtmf,
    twilio_mark,
    twilio_media,
    twilio_start,
    twilio_stop,
)
from telebridge.twilio.stream import (
    ConnectedEvent,
    DtmfEvent,
    MarkEvent,
    MediaEvent,
    ProtocolIssue,
    StartEvent,
    StopEvent,
    StreamDecoder,
    encode_clear,
    encode_mark,
    encode_media,
)

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL = "CA362b8e1b7d4a0d5a8a9a4c1e8a6b7c3d"
ACCT = "AC25e16e9a716a4a1786a7c83f58e30482"
PAYLOAD = bytes(range(160))
B64 = base64.b64encode(PAYLOAD).decode()

# Twilio's documented examples (docs "Media Streams - WebSocket Messages"), with real-looking SIDs.
DOC_CONNECTED = '{"event": "connected", "protocol": "Call", "version": "1.0.0"}'
DOC_START = json.dumps(
    {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": ACCT,
            "streamSid": SID,
            "callSid": CALL,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"},
        },
        "streamSid": SID,
    }
)
DOC_MEDIA = json.dumps(
    {
        "event": "media",
        "sequenceNumber": "2",
        "media": {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": B64},
        "streamSid": SID,
    }
)
DOC_DTMF = json.dumps(
    {"event": "dtmf", "streamSid": SID, "sequenceNumber": "3", "dtmf": {"track": "inbound_track", "digit": "1"}}
)
DOC_MARK = json.dumps({"event": "mark", "sequenceNumber": "4", "streamSid": SID, "mark": {"name": "my label"}})
DOC_STOP = json.dumps(
    {"event": "stop", "sequenceNumber": "5", "streamSid": SID, "stop": {"accountSid": ACCT, "callSid": CALL}}
)


def started() -> StreamDecoder:
    dec = StreamDecoder()
    assert isinstance(dec.receive(DOC_CONNECTED), ConnectedEvent)
    assert isinstance(dec.receive(DOC_START), StartEvent)
    return dec


def media_dict(**media_overrides: Any) -> dict[str, Any]:
    msg: dict[str, Any] = json.loads(DOC_MEDIA)
    msg["media"].update(media_overrides)
    return msg


def issue(result: object, kind: str) -> ProtocolIssue:
    assert isinstance(result, ProtocolIssue), result
    assert result.kind == kind, result
    assert result.detail
    return result


# ---------------------------------------------------------------- documented messages


def test_documented_session_parses_into_typed_events() -> None:
    dec = StreamDecoder()
    assert not dec.started and dec.stream_sid is None and dec.call_sid is None and dec.start is None

    connected = dec.receive(DOC_CONNECTED)
    assert isinstance(connected, ConnectedEvent)
    assert (connected.protocol, connected.version, connected.sequence_number) == ("Call", "1.0.0", None)

    start = dec.receive(DOC_START)
    assert isinstance(start, StartEvent)
    assert start.sequence_number == 1 and start.stream_sid == SID
    assert start.start.account_sid == ACCT and start.start.call_sid == CALL and start.start.stream_sid == SID
    assert start.start.tracks == ["inbound"]
    fmt = start.start.media_format
    assert (fmt.encoding, fmt.sample_rate, fmt.channels) == ("audio/x-mulaw", 8000, 1)
    assert start.custom_parameters == {"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"}
    assert dec.started and dec.stream_sid == SID and dec.call_sid == CALL and dec.start is start

    media = dec.receive(DOC_MEDIA)
    assert isinstance(media, MediaEvent)
    assert (media.sequence_number, media.stream_sid, media.track) == (2, SID, "inbound")
    assert (media.chunk, media.timestamp, media.payload) == (1, 5, PAYLOAD)

    dtmf = dec.receive(DOC_DTMF)
    assert isinstance(dtmf, DtmfEvent)
    assert (dtmf.digit, dtmf.track, dtmf.sequence_number, dtmf.stream_sid) == ("1", "inbound_track", 3, SID)

    mark = dec.receive(DOC_MARK)
    assert isinstance(mark, MarkEvent) and mark.name == "my label" and mark.sequence_number == 4

    stop = dec.receive(DOC_STOP)
    assert isinstance(stop, StopEvent)
    assert (stop.account_sid, stop.call_sid, stop.stream_sid, stop.sequence_number) == (ACCT, CALL, SID, 5)
    assert dec.stopped

    s = dec.stats
    assert (s.frames, s.events, s.media, s.media_bytes, s.marks, s.dtmf) == (6, 6, 1, 160, 1, 1)
    assert (s.malformed, s.unknown, s.state_violations, s.wrong_stream) == (0, 0, 0, 0)
    assert (s.out_of_order, s.seq_gaps, s.seq_missing) == (0, 0, 0)
    assert not s.issues
    assert dec.last_sequence_number == 5


def test_simulator_frames_parse_to_the_same_values() -> None:
    dec = StreamDecoder()
    assert isinstance(dec.receive(twilio_connected()), ConnectedEvent)
    start = dec.receive(twilio_start(SID, CALL, ACCT, {"agent": "demo", "tenant": "ü & <x>"}, 1))
    assert isinstance(start, StartEvent)
    assert start.custom_parameters == {"agent": "demo", "tenant": "ü & <x>"}
    media = dec.receive(twilio_media(SID, PAYLOAD, chunk=7, timestamp_ms=120, sequence_number=2))
    assert isinstance(media, MediaEvent) and (media.chunk, media.timestamp, media.payload) == (7, 120, PAYLOAD)
    assert isinstance(dec.receive(twilio_dtmf(SID, "#", 3)), DtmfEvent)
    mark = dec.receive(twilio_mark(SID, 'odd "name"\n', 4))
    assert isinstance(mark, MarkEvent) and mark.name == 'odd "name"\n'
    assert isinstance(dec.receive(twilio_stop(SID, CALL, ACCT, 5)), StopEvent)
    assert dec.stats.events == 6 and not dec.stats.issues


def test_start_without_custom_parameters_or_media_format_uses_defaults() -> None:
    msg = json.loads(DOC_START)
    del msg["start"]["customParameters"], msg["start"]["mediaFormat"]
    start = StreamDecoder().receive(json.dumps(msg))
    assert isinstance(start, StartEvent)
    assert start.custom_parameters == {}
    assert start.start.media_format.sample_rate == 8000


def test_integer_counters_are_accepted_and_unknown_keys_ignored() -> None:
    dec = started()
    msg = media_dict(chunk=3, timestamp=60, future="x")
    msg["sequenceNumber"] = 2
    msg["somethingNew"] = {"a": 1}
    ev = dec.receive(json.dumps(msg))
    assert isinstance(ev, MediaEvent) and (ev.chunk, ev.timestamp, ev.sequence_number) == (3, 60, 2)


def test_empty_payload_is_an_empty_frame() -> None:
    ev = started().receive(json.dumps(media_dict(payload="")))
    assert isinstance(ev, MediaEvent) and ev.payload == b""


# ---------------------------------------------------------------- malformed frames


@pytest.mark.parametrize("frame", [b'{"event":"connected"}', bytearray(b"\x00\x01"), memoryview(b"ab")])
def test_binary_frames_are_issues(frame: Any) -> None:
    dec = started()
    issue(dec.receive(frame), "binary_frame")
    assert dec.stats.malformed == 1 and dec.stats.issues["binary_frame"] == 1


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        ("", "invalid_json"),
        ("{", "invalid_json"),
        ("{'event': 'media'}", "invalid_json"),
        ('{"event":"media"} trailing', "invalid_json"),
        ("[" * 100_000, "invalid_json"),  # recursion depth, not a crash
        ("[]", "not_an_object"),
        ('[{"event":"media"}]', "not_an_object"),
        ('"media"', "not_an_object"),
        ("null", "not_an_object"),
        ("42", "not_an_object"),
        ("{}", "unknown_event"),
        ('{"event":"dance","streamSid":"MZ"}', "unknown_event"),
        ('{"event":null}', "unknown_event"),
        ('{"event":["media"]}', "unknown_event"),
        ('{"event":"clear","streamSid":"MZ"}', "unknown_event"),  # server-only message
    ],
)
def test_unparseable_frames_are_issues(frame: str, kind: str) -> None:
    dec = started()
    issue(dec.receive(frame), kind)
    assert dec.stats.issues[kind] == 1
    expected_malformed = 0 if kind == "unknown_event" else 1
    assert dec.stats.malformed == expected_malformed
    assert dec.stats.unknown == 1 - expected_malformed
    assert dec.stats.events == 2  # connected + start only


def _drop(d: dict[str, Any], *path: str) -> dict[str, Any]:
    target = d
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return d


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda m: _drop(m, "media"), "media.track"),
        (lambda m: _drop(m, "media", "payload"), "media.payload"),
        (lambda m: _drop(m, "media", "track"), "media.track"),
        (lambda m: _drop(m, "media", "chunk"), "media.chunk"),
        (lambda m: _drop(m, "media", "timestamp"), "media.timestamp"),
        (lambda m: _drop(m, "streamSid"), "streamSid"),
        (lambda m: {**m, "media": "not an object"}, "media.track"),
        (lambda m: {**m, "streamSid": 5}, "streamSid"),
        (lambda m: {**m, "sequenceNumber": True}, "sequenceNumber"),
        (lambda m: {**m, "sequenceNumber": "-1"}, "sequenceNumber"),
        (lambda m: {**m, "sequenceNumber": "4.0"}, "sequenceNumber"),
        (lambda m: {**m, "sequenceNumber": 4.0}, "sequenceNumber"),
        (lambda m: {**m, "sequenceNumber": " 4"}, "sequenceNumber"),
        (lambda m: {**m, "sequenceNumber": "٤"}, "sequenceNumber"),  # Arabic-Indic digit: isdigit() but not ASCII
        (lambda m: {**m, "sequenceNumber": "9" * 5000}, "sequenceNumber"),  # beyond int() digit limit
        (lambda m: {**m, "media": {**m["media"], "chunk": None}}, "media.chunk"),
        (lambda m: {**m, "media": {**m["media"], "timestamp": "5ms"}}, "media.timestamp"),
        (lambda m: {**m, "media": {**m["media"], "track": ["inbound"]}}, "media.track"),
        (lambda m: {**m, "media": {**m["media"], "payload": 123}}, "media.payload"),
        (lambda m: {**m, "media": {**m["media"], "payload": "not base64!"}}, "media.payload"),
        (lambda m: {**m, "media": {**m["media"], "payload": "AAA"}}, "media.payload"),  # bad padding
        (lambda m: {**m, "media": {**m["media"], "payload": "AA==AA=="}}, "media.payload"),
        (lambda m: {**m, "media": {**m["media"], "payload": "AAAA\n"}}, "media.payload"),
        (lambda m: {**m, "media": {**m["media"], "payload": "ÀÀÀÀ"}}, "media.payload"),
    ],
)
@pytest.mark.parametrize("fast_path", [True, False])
def test_invalid_media_is_a_precise_issue(mutate: Any, where: str, fast_path: bool) -> None:
    dec = StreamDecoder(fast_path=fast_path)
    dec.receive(DOC_START)
    result = issue(dec.receive(json.dumps(mutate(json.loads(DOC_MEDIA)))), "invalid_message")
    assert result.event == "media"
    assert where in result.detail
    assert dec.stats.malformed == 1 and dec.stats.media == 0


@pytest.mark.parametrize(
    ("frame", "where"),
    [
        ('{"event":"connected","version":"1.0.0"}', "protocol"),
        ('{"event":"start","sequenceNumber":"1","streamSid":"MZ1"}', "start"),
        ('{"event":"start","streamSid":"MZ1","start":{"accountSid":"AC","streamSid":"MZ1"}}', "start.callSid"),
        (
            '{"event":"start","streamSid":"MZ1","start":{"accountSid":"AC","streamSid":"MZ1","callSid":"CA",'
            '"customParameters":{"k":1}}}',
            "start.customParameters.k",
        ),
        (
            '{"event":"start","streamSid":"MZ1","start":{"accountSid":"AC","streamSid":"MZ1","callSid":"CA",'
            '"mediaFormat":{"sampleRate":"8000"}}}',
            "start.mediaFormat.sampleRate",
        ),
        ('{"event":"dtmf","streamSid":"MZ1","dtmf":{"track":"inbound_track","digit":"12"}}', "dtmf.digit"),
        ('{"event":"dtmf","streamSid":"MZ1","dtmf":{"track":"inbound_track"}}', "dtmf.digit"),
        ('{"event":"mark","streamSid":"MZ1","mark":{}}', "mark.name"),
        ('{"event":"mark","streamSid":"MZ1","mark":{"name":7}}', "mark.name"),
        ('{"event":"stop","streamSid":"MZ1","stop":{"accountSid":"AC"}}', "stop.callSid"),
    ],
)
def test_invalid_other_events_are_precise_issues(frame: str, where: str) -> None:
    result = issue(StreamDecoder().receive(frame), "invalid_message")
    assert where in result.detail, result.detail


def test_issue_details_are_bounded_for_hostile_input() -> None:
    dec = started()
    params = {f"k{i}" * 50: i for i in range(200)}
    msg = json.loads(DOC_START)
    msg["start"]["customParameters"] = params
    assert len(issue(StreamDecoder().receive(json.dumps(msg)), "invalid_message").detail) <= 500
    assert len(issue(dec.receive(json.dumps({"event": "x" * 10_000})), "unknown_event").detail) < 100


# ---------------------------------------------------------------- lifecycle and identity


@pytest.mark.parametrize("frame", [DOC_MEDIA, DOC_DTMF, DOC_MARK, DOC_STOP])
def test_anything_but_connected_before_start_is_an_issue(frame: str) -> None:
    dec = StreamDecoder()
    dec.receive(DOC_CONNECTED)
    result = issue(dec.receive(frame), "before_start")
    assert result.event == json.loads(frame)["event"]
    assert dec.stats.state_violations == 1 and not dec.started and not dec.stopped
    # the stream can still start normally afterwards
    assert isinstance(dec.receive(DOC_START), StartEvent)


def test_start_without_connected_is_accepted() -> None:
    dec = StreamDecoder()
    assert isinstance(dec.receive(DOC_START), StartEvent)
    assert isinstance(dec.receive(DOC_MEDIA), MediaEvent)


def test_second_start_is_an_issue_and_keeps_the_first() -> None:
    dec = started()
    other = DOC_START.replace(SID, "MZ" + "f" * 32).replace('"sequenceNumber": "1"', '"sequenceNumber": "2"')
    issue(dec.receive(other), "duplicate_start")
    issue(dec.receive(DOC_START), "duplicate_start")
    assert dec.stream_sid == SID and dec.stats.state_violations == 2
    assert dec.start is not None and dec.start.stream_sid == SID


def test_connected_after_start_or_twice_is_an_issue() -> None:
    dec = StreamDecoder()
    dec.receive(DOC_CONNECTED)
    issue(dec.receive(DOC_CONNECTED), "unexpected_connected")
    dec.receive(DOC_START)
    issue(dec.receive(DOC_CONNECTED), "unexpected_connected")
    assert dec.stats.issues["unexpected_connected"] == 2


@pytest.mark.parametrize("frame", [DOC_CONNECTED, DOC_START, DOC_MEDIA, DOC_DTMF, DOC_MARK, DOC_STOP])
def test_nothing_is_valid_after_stop(frame: str) -> None:
    dec = started()
    assert isinstance(dec.receive(DOC_STOP), StopEvent)
    issue(dec.receive(frame), "after_stop")
    assert dec.stopped and dec.stats.state_violations == 1


@pytest.mark.parametrize("frame", [DOC_MEDIA, DOC_DTMF, DOC_MARK, DOC_STOP])
def test_wrong_stream_sid_is_an_issue(frame: str) -> None:
    dec = started()
    result = issue(dec.receive(frame.replace(SID, "MZ" + "0" * 32)), "wrong_stream_sid")
    assert SID in result.detail
    assert dec.stats.wrong_stream == 1 and not dec.stopped and dec.stats.media == 0


def test_start_whose_inner_and_outer_stream_sid_differ_is_an_issue() -> None:
    msg = json.loads(DOC_START)
    msg["start"]["streamSid"] = "MZ" + "1" * 32
    dec = StreamDecoder()
    issue(dec.receive(json.dumps(msg)), "wrong_stream_sid")
    assert not dec.started


@pytest.mark.parametrize("track", ["outbound", "inbound_track", "both", ""])
def test_media_on_a_non_inbound_track_is_an_issue(track: str) -> None:
    dec = started()
    issue(dec.receive(json.dumps(media_dict(track=track))), "wrong_track")
    assert dec.stats.wrong_stream == 1 and dec.stats.media == 0


# ---------------------------------------------------------------- sequence numbers


def test_sequence_gaps_and_reordering_are_counted_but_events_delivered() -> None:
    dec = started()  # start had sequenceNumber 1
    seqs = [2, 3, 6, 5, 7, 7, 10]
    results = [dec.receive(twilio_media(SID, PAYLOAD, i, 20 * i, s)) for i, s in enumerate(seqs)]
    assert all(isinstance(r, MediaEvent) for r in results)
    s = dec.stats
    assert s.seq_gaps == 2  # 3 -> 6, 7 -> 10
    assert s.seq_missing == 2 + 2  # 4,5 then 8,9 (late 5 does not refill the hole)
    assert s.out_of_order == 2  # 5 after 6, the repeated 7
    assert dec.last_sequence_number == 10
    assert s.media == len(seqs) and not s.issues


def test_missing_sequence_numbers_are_not_counted_as_gaps() -> None:
    dec = started()
    msg = media_dict()
    del msg["sequenceNumber"]
    assert isinstance(dec.receive(json.dumps(msg)), MediaEvent)
    assert dec.receive(twilio_media(SID, PAYLOAD, 2, 20, 2)).sequence_number == 2  # type: ignore[union-attr]
    assert dec.stats.seq_gaps == 0 and dec.stats.out_of_order == 0


# ---------------------------------------------------------------- fast path == full validation


def test_fast_construction_is_indistinguishable_from_validation() -> None:
    assert messages.FAST_CONSTRUCT, "pydantic internals changed; the fast path fell back to model_construct"
    fast = started().receive(DOC_MEDIA)
    slow = (lambda d: (d.receive(DOC_START), d.receive(DOC_MEDIA))[1])(StreamDecoder(fast_path=False))
    assert isinstance(fast, MediaEvent) and isinstance(slow, MediaEvent)
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert fast.model_dump() == slow.model_dump()
    assert fast.model_fields_set == slow.model_fields_set
    with pytest.raises(Exception):  # still frozen
        fast.track = "outbound"  # type: ignore[misc]


def _json_values() -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats(allow_nan=False)
        | st.text(max_size=30)
        | st.sampled_from(["inbound", "outbound", "2", "007", "AAAA", B64, "", SID, "media", "-3"]),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
        max_leaves=12,
    )


_MEDIA_KEYS = st.sampled_from(["track", "chunk", "timestamp", "payload", "extra"])
_TOP_KEYS = st.sampled_from(["sequenceNumber", "streamSid", "media", "event", "extra"])


def mutated(msg: dict[str, Any], body: str, top: dict[str, Any], inner: dict[str, Any], drop: list[str]) -> str:
    """``msg`` (an event whose fields sit in ``msg[body]``) with keys replaced (``top``, ``inner``: of the body) and
    dropped (``drop``, at either level); the body itself replaced when ``top`` has it. As a frame."""
    msg[body].update(inner)
    msg.update({k: v for k, v in top.items() if k != body})
    for key in drop:
        msg.pop(key, None)
        if isinstance(msg.get(body), dict):
            msg[body].pop(key, None)
    if body in top:
        msg[body] = top[body]
    return json.dumps(msg)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    top=st.dictionaries(_TOP_KEYS, _json_values(), max_size=3),
    inner=st.dictionaries(_MEDIA_KEYS, _json_values(), max_size=3),
    drop=st.lists(st.sampled_from(["track", "chunk", "timestamp", "payload", "streamSid", "sequenceNumber"])),
)
def test_fast_and_full_paths_agree_on_mutated_media(
    top: dict[str, Any], inner: dict[str, Any], drop: list[str]
) -> None:
    frame = mutated(media_dict(), "media", top, inner, drop)
    fast, slow = StreamDecoder(), StreamDecoder(fast_path=False)
    fast.receive(DOC_START)
    slow.receive(DOC_START)
    a, b = fast.receive(frame), slow.receive(frame)
    assert type(a) is type(b)
    if isinstance(a, ProtocolIssue):
        assert isinstance(b, ProtocolIssue) and a.kind == b.kind
    else:
        assert a == b
    assert fast.stats.as_dict() == slow.stats.as_dict()


def test_receive_audio_gives_marks_as_receive_does() -> None:
    for doc in (DOC_MARK, json.dumps({k: v for k, v in json.loads(DOC_MARK).items() if k != "sequenceNumber"})):
        dec, audio = started(), started()
        a, b = dec.receive(doc), audio.receive_audio(doc)
        assert isinstance(a, MarkEvent) and a == b and a.model_fields_set == b.model_fields_set
        assert dec.stats.as_dict() == audio.stats.as_dict() and audio.stats.marks == 1


_MARK_KEYS = st.sampled_from(["name", "extra"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    top=st.dictionaries(st.sampled_from(["sequenceNumber", "streamSid", "mark", "extra"]), _json_values(), max_size=3),
    inner=st.dictionaries(_MARK_KEYS, _json_values(), max_size=2),
    drop=st.lists(st.sampled_from(["name", "streamSid", "sequenceNumber", "mark"])),
)
def test_receive_audio_and_receive_agree_on_mutated_marks(
    top: dict[str, Any], inner: dict[str, Any], drop: list[str]
) -> None:
    frame = mutated(json.loads(DOC_MARK), "mark", top, inner, drop)
    fast, audio, slow = started(), started(), StreamDecoder(fast_path=False)
    slow.receive(DOC_CONNECTED)
    slow.receive(DOC_START)
    a, c, b = fast.receive(frame), audio.receive_audio(frame), slow.receive(frame)
    assert type(a) is type(b) is type(c)
    if isinstance(a, ProtocolIssue):
        assert isinstance(b, ProtocolIssue) and isinstance(c, ProtocolIssue) and a.kind == b.kind == c.kind
    else:
        assert a == b == c and a.model_fields_set == b.model_fields_set
    assert fast.stats.as_dict() == slow.stats.as_dict() == audio.stats.as_dict()


# ---------------------------------------------------------------- fuzzing: receive() never raises


@settings(max_examples=300, deadline=None)
@given(frame=st.one_of(st.text(), st.binary()))
def test_receive_never_raises_on_arbitrary_frames(frame: str | bytes) -> None:
    for dec in (StreamDecoder(), started()):
        result = dec.receive(frame)
        assert isinstance(result, ProtocolIssue | codec.Event)


@settings(max_examples=400, deadline=None)
@given(
    obj=st.dictionaries(
        st.sampled_from(["event", "streamSid", "sequenceNumber", "media", "start", "stop", "mark", "dtmf", "x"]),
        _json_values(),
    ),
    event=st.sampled_from(["connected", "start", "media", "dtmf", "mark", "stop", "clear", None]),
)
def test_receive_never_raises_on_arbitrary_json_objects(obj: dict[str, Any], event: str | None) -> None:
    if event is not None:
        obj["event"] = event
    frame = json.dumps(obj)
    for dec in (StreamDecoder(), started(), StreamDecoder(fast_path=False)):
        before = dec.stats.frames
        result = dec.receive(frame)
        assert result is not None
        assert dec.stats.frames == before + 1
        if isinstance(result, ProtocolIssue):
            assert sum(dec.stats.issues.values()) >= 1


@settings(max_examples=200, deadline=None)
@given(frames=st.lists(st.sampled_from([DOC_CONNECTED, DOC_START, DOC_MEDIA, DOC_DTMF, DOC_MARK, DOC_STOP, "{"])))
def test_any_sequence_of_frames_keeps_counters_consistent(frames: list[str]) -> None:
    dec = StreamDecoder()
    results = [dec.receive(f) for f in frames]
    s = dec.stats
    n_issues = sum(isinstance(r, ProtocolIssue) for r in results)
    assert s.frames == len(frames)
    assert s.events == len(frames) - n_issues
    assert sum(s.issues.values()) == n_issues == s.malformed + s.unknown + s.state_violations + s.wrong_stream
    stops = [r for r in results if isinstance(r, StopEvent)]
    assert len(stops) <= 1
    assert len([r for r in results if isinstance(r, StartEvent)]) <= 1


def _same(a: object, b: object) -> bool:
    """receive_audio's result ``b`` against receive's ``a``: a payload for a MediaEvent, else the same value."""
    if isinstance(a, MediaEvent):
        return type(b) is bytes and b == a.payload
    return type(b) is not bytes and a == b


def test_receive_audio_gives_the_payload_with_the_same_checks_and_counters() -> None:
    """The media route's hot path: an accepted media frame gives its μ-law bytes; every other frame, valid or
    not, what receive() gives; the counters and sequence tracking end up the same."""
    msg = json.loads(DOC_MEDIA)
    frames: list[str | bytes] = [DOC_MEDIA, DOC_CONNECTED, DOC_START, DOC_MEDIA]
    for seq in ("5", "6", "9", "7", 12, None):  # in order, a gap, reordered, an integer, none
        m = json.loads(DOC_MEDIA)
        if seq is None:
            del m["sequenceNumber"]
        else:
            m["sequenceNumber"] = seq
        frames.append(json.dumps(m))
    bad = [
        media_dict(track="outbound"), media_dict(payload="not base64!"), media_dict(chunk="-1"),
        media_dict(timestamp=True), {**msg, "streamSid": "MZother"}, {**msg, "sequenceNumber": "1.5"},
        {**msg, "media": "x"}, media_dict(payload=7),
    ]
    frames += [json.dumps(m) for m in bad]
    frames += [b"\x00\x01", "{", "[]", '{"event": 3}', DOC_DTMF, DOC_MARK, DOC_MEDIA, DOC_STOP, DOC_MEDIA]
    full, fast = StreamDecoder(), StreamDecoder()
    results = [(full.receive(f), fast.receive_audio(f)) for f in frames]
    for frame, (a, b) in zip(frames, results):
        assert _same(a, b), (frame, a, b)
    assert sum(type(b) is bytes for _, b in results) == 8
    assert full.stats == fast.stats
    assert full.last_sequence_number == fast.last_sequence_number


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(["sequenceNumber", "streamSid", "event", "media"]),
       media_key=st.sampled_from(["track", "chunk", "timestamp", "payload"]), value=_json_values(),
       inner=st.booleans())
def test_receive_audio_agrees_with_receive_on_mutated_media(key: str, media_key: str, value: Any,
                                                            inner: bool) -> None:
    msg = json.loads(DOC_MEDIA)
    if inner:
        msg["media"][media_key] = value
    else:
        msg[key] = value
    frame = json.dumps(msg)
    full, fast = started(), started()
    assert _same(full.receive(frame), fast.receive_audio(frame))
    assert full.stats == fast.stats


# The text Twilio writes (compact, its key order: the simulator's twilio_media), which receive_audio reads without
# parsing the JSON (messages.media_text); any change to it must give what receive() gives.
WIRE_MEDIA = twilio_media(SID, PAYLOAD, chunk=1, timestamp_ms=5, sequence_number=2)


def test_the_wire_text_of_a_media_frame_is_read_without_json() -> None:
    assert messages.media_text(WIRE_MEDIA) == (2, SID, PAYLOAD)
    assert json.loads(WIRE_MEDIA) == json.loads(DOC_MEDIA)  # (the same frame as the documented one)
    full, fast = started(), started()
    assert _same(full.receive(WIRE_MEDIA), fast.receive_audio(WIRE_MEDIA))
    assert full.stats == fast.stats and fast.last_sequence_number == 2
    # Not that text: the JSON way, with the same result (a space, another key order, an escaped character).
    for other in (DOC_MEDIA, WIRE_MEDIA.replace('"media":{', '"media": {'),
                  json.dumps(json.loads(WIRE_MEDIA), separators=(",", ":"), sort_keys=True),
                  WIRE_MEDIA.replace('"inbound"', '"\\u0069nbound"')):
        assert messages.media_text(other) is None
        full, fast = started(), started()
        a, b = full.receive(other), fast.receive_audio(other)
        assert isinstance(a, MediaEvent) and _same(a, b)


_WIRE_CHARS = st.sampled_from(list('0123456789"{}:,=+/ \\\x00aAzZ\u0663\u00e9') + ["MZ", "==", '","', "outbound"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.tuples(st.integers(0, len(WIRE_MEDIA)), st.integers(0, 3),
                               st.lists(_WIRE_CHARS, max_size=3).map("".join)), min_size=1, max_size=3),
       seq=st.sampled_from(["3", "2", "1", "007", "9" * 18, "9" * 19, "\u0663", ""]))
def test_receive_audio_agrees_with_receive_on_mutated_wire_text(cuts: list[tuple[int, int, str]], seq: str) -> None:
    """Characters replaced anywhere in Twilio's text (digits, quotes, braces, padding, non-ASCII digits, a
    changed SID or track...): receive_audio gives what receive() gives, with the same counters, whether the text
    is still read without JSON or not."""
    frame = WIRE_MEDIA.replace('"sequenceNumber":"2"', f'"sequenceNumber":"{seq}"')
    for at, drop, text in cuts:
        at = min(at, len(frame))
        frame = frame[:at] + text + frame[at + drop:]
    full, fast = started(), started()
    full.receive(WIRE_MEDIA)
    fast.receive_audio(WIRE_MEDIA)
    a, b = full.receive(frame), fast.receive_audio(frame)
    assert _same(a, b), (frame, a, b)
    if isinstance(a, ProtocolIssue):
        assert a.kind == b.kind  # type: ignore[union-attr]
    assert full.stats == fast.stats
    assert full.last_sequence_number == fast.last_sequence_number


# ---------------------------------------------------------------- server → Twilio encoders


def test_encode_media_has_exactly_twilios_keys_and_round_trips() -> None:
    frame = encode_media(SID, PAYLOAD)
    assert json.loads(frame) == {"event": "media", "streamSid": SID, "media": {"payload": B64}}
    msg = decode_server_message(frame, expected_stream_sid=SID)
    assert isinstance(msg, ServerMedia) and msg.payload == PAYLOAD and msg.stream_sid == SID


def test_encode_clear_has_exactly_twilios_keys() -> None:
    frame = encode_clear(SID)
    assert json.loads(frame) == {"event": "clear", "streamSid": SID}
    assert decode_server_message(frame) == ServerClear(stream_sid=SID)


@pytest.mark.parametrize(
    "name",
    [
        "turn-1:seg-0",
        'quote " and \\ backslash',
        "new\nline\ttab",
        "</script>",
        "ünï😀cödé",
        "\u2028\u2029",
        "\x00",
        "{}",
    ],
)
def test_encode_mark_escapes_odd_names(name: str) -> None:
    frame = encode_mark(SID, name)
    assert json.loads(frame) == {"event": "mark", "streamSid": SID, "mark": {"name": name}}
    assert decode_server_message(frame) == ServerMark(stream_sid=SID, name=name)
    # the Twilio-side echo of that mark reaches the decoder unchanged
    dec = started()
    echoed = dec.receive(twilio_mark(SID, name, 2))
    assert isinstance(echoed, MarkEvent) and echoed.name == name


def test_encoders_escape_odd_stream_sids() -> None:
    odd = 'MZ"x\\'
    assert json.loads(encode_clear(odd))["streamSid"] == odd
    assert decode_server_message(encode_media(odd, b"\x7f")).stream_sid == odd


@pytest.mark.parametrize(
    "call",
    [
        lambda: encode_mark(SID, ""),
        lambda: encode_mark(SID, "\ud800"),  # lone surrogate cannot go on a UTF-8 wire
        lambda: encode_media("", b"x"),
        lambda: encode_clear(""),
    ],
)
def test_encoders_refuse_unsendable_values(call: Any) -> None:
    with pytest.raises(ValueError):
        call()


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=400), name=st.text(st.characters(exclude_categories=["Cs"]), min_size=1))
def test_encoders_round_trip_property(payload: bytes, name: str) -> None:
    assert decode_server_message(encode_media(SID, payload)) == ServerMedia(stream_sid=SID, payload=payload)
    assert decode_server_message(encode_mark(SID, name)) == ServerMark(stream_sid=SID, name=name)


# ---------------------------------------------------------------- decode_server_message is strict like Twilio


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[]",
        '"media"',
        "{}",
        '{"event":"start","streamSid":"MZ1"}',
        '{"event":"Media","streamSid":"MZ1","media":{"payload":""}}',
        # extra keys, top level and nested
        '{"event":"clear","streamSid":"MZ1","extra":1}',
        '{"event":"media","streamSid":"MZ1","media":{"payload":"AAAA","track":"outbound"}}',
        '{"event":"media","streamSid":"MZ1","sequenceNumber":"1","media":{"payload":"AAAA"}}',
        '{"event":"mark","streamSid":"MZ1","mark":{"name":"a","when":1}}',
        # missing keys
        '{"event":"clear"}',
        '{"event":"media","streamSid":"MZ1"}',
        '{"event":"media","streamSid":"MZ1","media":{}}',
        '{"event":"mark","streamSid":"MZ1","mark":{}}',
        # wrong types / values
        '{"event":"clear","streamSid":5}',
        '{"event":"clear","streamSid":""}',
        '{"event":"media","streamSid":"MZ1","media":"AAAA"}',
        '{"event":"media","streamSid":"MZ1","media":{"payload":5}}',
        '{"event":"media","streamSid":"MZ1","media":{"payload":"AAA"}}',
        '{"event":"media","streamSid":"MZ1","media":{"payload":"#$%^"}}',
        '{"event":"mark","streamSid":"MZ1","mark":{"name":""}}',
        '{"event":"mark","streamSid":"MZ1","mark":{"name":null}}',
        # duplicate keys
        '{"event":"clear","streamSid":"MZ1","streamSid":"MZ1"}',
    ],
)
def test_decode_server_message_rejects_what_twilio_rejects(frame: str) -> None:
    with pytest.raises(TwilioProtocolError) as err:
        decode_server_message(frame)
    assert err.value.code == 31951 and err.value.message


def test_decode_server_message_rejects_binary_with_31950() -> None:
    with pytest.raises(TwilioProtocolError) as err:
        decode_server_message(encode_clear(SID).encode())
    assert err.value.code == 31950


def test_decode_server_message_checks_the_stream_sid_when_asked() -> None:
    with pytest.raises(TwilioProtocolError) as err:
        decode_server_message(encode_clear("MZother"), expected_stream_sid=SID)
    assert err.value.code == 31951


@settings(max_examples=300, deadline=None)
@given(frame=st.one_of(st.text(), st.binary(), _json_values().map(json.dumps)))
def test_decode_server_message_only_raises_twilio_errors(frame: str | bytes) -> None:
    try:
        decode_server_message(frame)
    except TwilioProtocolError as exc:
        assert exc.code in (31950, 31951)
