"""Tests for TwiML builders (telebridge.twilio.twiml): parsed back with ElementTree, never string-matched."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from telebridge.twilio.twiml import connect_stream, dial, reject, say_and_hangup

ODD = 'Tom & "Jerry" <script>\'x\'</script> ü😀\n\ttab'


def parse(xml: str) -> ET.Element:
    root = ET.fromstring(xml)
    assert root.tag == "Response"
    return root


def test_connect_stream_structure() -> None:
    xml = connect_stream(
        "wss://tb.example.com/media/tok123",
        {"agent": "demo", "caller": "+15551234567"},
        status_callback="https://tb.example.com/twilio/stream-status",
        stream_name="call-1",
    )
    root = parse(xml)
    assert [c.tag for c in root] == ["Connect"]
    (connect,) = list(root)
    assert [c.tag for c in connect] == ["Stream"]
    (stream,) = list(connect)
    assert stream.attrib == {
        "url": "wss://tb.example.com/media/tok123",
        "name": "call-1",
        "statusCallback": "https://tb.example.com/twilio/stream-status",
        "statusCallbackMethod": "POST",
    }
    params = [(p.tag, p.attrib) for p in stream]
    assert params == [
        ("Parameter", {"name": "agent", "value": "demo"}),
        ("Parameter", {"name": "caller", "value": "+15551234567"}),
    ]


def test_connect_stream_minimal_has_only_url() -> None:
    stream = parse(connect_stream("wss://h/m", {})).find("./Connect/Stream")
    assert stream is not None and stream.attrib == {"url": "wss://h/m"} and len(stream) == 0


def test_parameters_with_odd_characters_are_escaped_and_round_trip() -> None:
    xml = connect_stream("wss://h/m", {"caller name": ODD, "k&<>\"'": "v"})
    assert "<script>" not in xml
    params = {p.get("name"): p.get("value") for p in parse(xml).iter("Parameter")}
    assert params == {"caller name": ODD, "k&<>\"'": "v"}


def test_empty_parameter_values_are_skipped() -> None:
    params = {p.get("name") for p in parse(connect_stream("wss://h/m", {"a": "", "b": "x", "c": ""})).iter("Parameter")}
    assert params == {"b"}


@pytest.mark.parametrize(
    "url",
    [
        "ws://h/m",
        "https://h/m",
        "http://h/m",
        "wss:///m",
        "wss://h/m?token=1",
        "wss://h/m?",
        "wss://h/m#frag",
        "h/m",
        "",
    ],
)
def test_bad_stream_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        connect_stream(url, {})


def test_insecure_stream_url_only_with_flag() -> None:
    stream = parse(connect_stream("ws://127.0.0.1:8000/m", {}, allow_insecure=True)).find("./Connect/Stream")
    assert stream is not None and stream.get("url") == "ws://127.0.0.1:8000/m"
    with pytest.raises(ValueError):
        connect_stream("ws://h/m?x=1", {}, allow_insecure=True)
    with pytest.raises(ValueError):
        connect_stream("http://h/m", {}, allow_insecure=True)


@pytest.mark.parametrize("callback", ["ftp://h/cb", "/relative/cb", "https:///cb"])
def test_bad_status_callback_is_refused(callback: str) -> None:
    with pytest.raises(ValueError):
        connect_stream("wss://h/m", {}, status_callback=callback)


@pytest.mark.parametrize("params", [{"": "v"}, {"a": "bad\x00value"}, {"a\x07": "v"}, {"a": "\ud800"}])
def test_unrepresentable_or_nameless_parameters_are_refused(params: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        connect_stream("wss://h/m", params)


@pytest.mark.parametrize("reason", ["busy", "rejected"])
def test_reject(reason: str) -> None:
    root = parse(reject(reason))  # type: ignore[arg-type]
    assert [(c.tag, c.attrib) for c in root] == [("Reject", {"reason": reason})]


def test_reject_refuses_other_reasons() -> None:
    with pytest.raises(ValueError):
        reject("nope")  # type: ignore[arg-type]


def test_say_and_hangup_escapes_the_message() -> None:
    root = parse(say_and_hangup(ODD))
    assert [c.tag for c in root] == ["Say", "Hangup"]
    assert root[0].text == ODD and root[0].attrib == {}


def test_say_and_hangup_voice_and_language() -> None:
    say = parse(say_and_hangup("All agents are busy.", voice="Polly.Joanna", language="en-US"))[0]
    assert say.attrib == {"voice": "Polly.Joanna", "language": "en-US"}


@pytest.mark.parametrize("message", ["", "   ", "bell\x07"])
def test_say_and_hangup_refuses_blank_or_unrepresentable(message: str) -> None:
    with pytest.raises(ValueError):
        say_and_hangup(message)


def test_dial_number_with_caller_id() -> None:
    root = parse(dial("+15551234567", caller_id="+18005550100"))
    (d,) = list(root)
    assert d.tag == "Dial" and d.attrib == {"callerId": "+18005550100"}
    assert [(c.tag, c.text) for c in d] == [("Number", "+15551234567")]


def test_dial_without_caller_id_and_sip() -> None:
    d = parse(dial("sip:agent@pbx.example.com;transport=tls"))[0]
    assert d.attrib == {}
    assert [(c.tag, c.text) for c in d] == [("Sip", "sip:agent@pbx.example.com;transport=tls")]


@pytest.mark.parametrize(
    ("number", "caller_id"),
    [
        ("5551234567", None),
        ("+1 555 123 4567", None),
        ("+0123", None),
        ("+1555123456789012", None),
        ("<Number>+1</Number>", None),
        ("sip:", None),
        ("sip:a b@c", None),
        ("+15551234567", "Bob"),
    ],
)
def test_dial_refuses_loose_targets(number: str, caller_id: str | None) -> None:
    with pytest.raises(ValueError):
        dial(number, caller_id=caller_id)


def test_connect_stream_action_is_requested_when_the_stream_ends():
    xml = connect_stream("wss://example.com/twilio/media", {"From": "+15551230001"},
                         action="https://example.com/twilio/stream-ended?x=1&y=2")
    root = ET.fromstring(xml)
    assert [child.tag for child in root] == ["Connect"]
    connect = root.find("Connect")
    assert connect.get("action") == "https://example.com/twilio/stream-ended?x=1&y=2"
    assert connect.get("method") == "POST"
    with pytest.raises(ValueError):
        connect_stream("wss://example.com/twilio/media", {}, action="ftp://example.com/x")


# --- transfers: caller ID, ring timeout, whisper ----------------------------------------------------------------
def test_dial_with_timeout_and_whisper_is_exact_and_escaped() -> None:
    url = 'https://tb.example.com/twilio/transfer-whisper?d=a%2Bb&x="<y>"'
    assert dial("+15557654321", "+18005550100", timeout=20, whisper_url=url) == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Dial callerId="+18005550100" timeout="20">'
        '<Number method="POST" url="https://tb.example.com/twilio/transfer-whisper?'
        'd=a%2Bb&amp;x=&quot;&lt;y&gt;&quot;">+15557654321</Number></Dial></Response>'
    )
    root = parse(dial("sip:desk@pbx.example.com", whisper_url="https://tb.example.com/w?d=1"))
    sip = root[0][0]
    assert sip.tag == "Sip" and sip.attrib == {"url": "https://tb.example.com/w?d=1", "method": "POST"}
    assert root[0].attrib == {}


@pytest.mark.parametrize("kwargs", [
    {"timeout": 4}, {"timeout": 601}, {"timeout": 2.5}, {"timeout": True},
    {"whisper_url": "ftp://x.example/w"}, {"whisper_url": "https://x.example/w#frag"}, {"whisper_url": "/relative"},
    {"caller_id": "client:alice"},
])
def test_dial_refuses_bad_transfer_options(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        dial("+15557654321", **kwargs)


def test_say_alone_escapes_and_empty_response() -> None:
    from telebridge.twilio.twiml import empty, say

    expected = '<?xml version="1.0" encoding="UTF-8"?><Response><Say>A &lt;b&gt; &amp; c</Say></Response>'
    assert say("A <b> & c") == expected
    assert empty() == '<?xml version="1.0" encoding="UTF-8"?><Response />'
    with pytest.raises(ValueError):
        say("  ")
