"""Tests for X-Twilio-Signature handling (telebridge.twilio.signature)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.datastructures import FormData, Headers
from twilio.request_validator import RequestValidator

from telebridge.twilio.signature import compute_signature, public_url, url_from_forwarded, validate_signature

TOKEN = "12345abcdef67890aabbccddeeff0011"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}


def _reference(url: str, params: dict[str, str]) -> str:
    """Twilio's algorithm written out independently: URL + sorted name/value pairs, HMAC-SHA1, base64."""
    data = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(TOKEN.encode(), data.encode(), hashlib.sha1).digest()).decode()


def test_compute_matches_the_algorithm_and_the_sdk() -> None:
    sig = compute_signature(URL, PARAMS, TOKEN)
    assert sig == _reference(URL, PARAMS)
    assert sig == RequestValidator(TOKEN).compute_signature(URL, PARAMS)
    assert validate_signature(URL, PARAMS, sig, TOKEN)
    assert RequestValidator(TOKEN).validate(URL, PARAMS, sig)


@pytest.mark.parametrize(
    ("url", "params", "token"),
    [
        (URL, {**PARAMS, "Digits": "1235"}, TOKEN),  # tampered value
        (URL, {**PARAMS, "Extra": "x"}, TOKEN),  # added field
        (URL, {k: v for k, v in PARAMS.items() if k != "To"}, TOKEN),  # removed field
        (URL.replace("foo=1", "foo=2"), PARAMS, TOKEN),  # tampered query
        (URL.replace("mycompany", "evil"), PARAMS, TOKEN),  # other host
        (URL.replace("https", "http"), PARAMS, TOKEN),  # other scheme
        (URL, PARAMS, TOKEN[:-1] + "2"),  # other auth token
    ],
)
def test_tampering_fails(url: str, params: dict[str, str], token: str) -> None:
    sig = compute_signature(URL, PARAMS, TOKEN)
    assert not validate_signature(url, params, sig, token)


@pytest.mark.parametrize("bad", ["", None, "x", "ü" * 28, compute_signature(URL, PARAMS, TOKEN) + "=", "\x00"])
def test_garbage_signatures_are_false_not_errors(bad: str | None) -> None:
    assert not validate_signature(URL, PARAMS, bad, TOKEN)


def test_empty_token_never_validates() -> None:
    assert not validate_signature(URL, PARAMS, compute_signature(URL, PARAMS, ""), "")


@pytest.mark.parametrize(
    ("signed", "received"),
    [
        ("https://example.com/voice", "https://example.com:443/voice"),
        ("https://example.com:443/voice", "https://example.com/voice"),
        ("http://example.com/voice", "http://example.com:80/voice"),
        ("https://example.com:8443/voice", "https://example.com:8443/voice"),
    ],
)
def test_port_variants_are_accepted_like_the_sdk(signed: str, received: str) -> None:
    sig = compute_signature(signed, PARAMS, TOKEN)
    assert validate_signature(received, PARAMS, sig, TOKEN)
    assert RequestValidator(TOKEN).validate(received, PARAMS, sig)


def test_a_different_port_is_not_a_variant() -> None:
    sig = compute_signature("https://example.com:8443/voice", PARAMS, TOKEN)
    assert not validate_signature("https://example.com:9443/voice", PARAMS, sig, TOKEN)
    assert not validate_signature("https://example.com/voice", PARAMS, sig, TOKEN)


@settings(max_examples=100, deadline=None)
@given(
    port=st.sampled_from(["", ":443", ":8443"]),
    path=st.text("abc/-_.%~", max_size=20),
    params=st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=5),
    tamper=st.booleans(),
)
def test_agrees_with_request_validator_on_https(port: str, path: str, params: dict[str, str], tamper: bool) -> None:
    url = f"https://tb.example.com{port}/{path}"
    sig = compute_signature(url, params, TOKEN)
    if tamper:
        sig = compute_signature(url + "x", params, TOKEN)
    assert validate_signature(url, params, sig, TOKEN) == RequestValidator(TOKEN).validate(url, params, sig)
    assert validate_signature(url, params, sig, TOKEN) is (not tamper)


# ---------------------------------------------------------------- WebSocket upgrade


def test_websocket_upgrade_is_signed_with_no_params() -> None:
    url = "wss://tb.example.com/media/route-token"
    sig = compute_signature(url, None, TOKEN)
    assert sig == _reference(url, {})
    assert sig == compute_signature(url, {}, TOKEN)
    assert validate_signature(url, None, sig, TOKEN)
    assert validate_signature(url, {}, sig, TOKEN)
    assert not validate_signature(url, {"x": "y"}, sig, TOKEN)
    assert not validate_signature(url.replace("wss", "https"), None, sig, TOKEN)
    assert not validate_signature(url + "2", None, sig, TOKEN)


def test_wss_default_port_is_443_not_80() -> None:
    """The SDK's validate() adds :80 to wss:// URLs; a signature over wss://host:443 must still validate."""
    signed = "wss://tb.example.com:443/media/abc"
    sig = compute_signature(signed, None, TOKEN)
    assert validate_signature("wss://tb.example.com/media/abc", None, sig, TOKEN)
    assert not RequestValidator(TOKEN).validate("wss://tb.example.com/media/abc", {}, sig)  # the SDK gap
    assert not validate_signature("wss://tb.example.com:80/media/abc", None, sig, TOKEN)


def test_multi_valued_form_fields_are_all_signed() -> None:
    form = FormData([("To", "+18005551212"), ("Tag", "b"), ("Tag", "a")])
    sig = compute_signature(URL, form, TOKEN)
    data = URL + "Taga" + "Tagb" + "To+18005551212"
    assert sig == base64.b64encode(hmac.new(TOKEN.encode(), data.encode(), hashlib.sha1).digest()).decode()
    assert validate_signature(URL, form, sig, TOKEN)
    assert not validate_signature(URL, FormData([("To", "+18005551212"), ("Tag", "b")]), sig, TOKEN)


# ---------------------------------------------------------------- rebuilding the public URL


@pytest.mark.parametrize(
    ("base", "path", "query", "ws", "expected"),
    [
        ("https://abc.ngrok.app", "/twilio/voice", "", False, "https://abc.ngrok.app/twilio/voice"),
        ("https://abc.ngrok.app/", "/twilio/voice", "", False, "https://abc.ngrok.app/twilio/voice"),
        ("https://abc.ngrok.app", "/media/tok", "", True, "wss://abc.ngrok.app/media/tok"),
        ("http://localhost:8000", "/media/tok", "", True, "ws://localhost:8000/media/tok"),
        ("https://x.com/tb", "/twilio/voice", "", False, "https://x.com/tb/twilio/voice"),
        ("https://x.com/tb/", "twilio/voice", "", False, "https://x.com/tb/twilio/voice"),
        ("https://x.com/tb", "/media/tok", "", True, "wss://x.com/tb/media/tok"),
        ("HTTPS://x.com:8443/a/b", "/v", "a=1&b=%2F+c", False, "https://x.com:8443/a/b/v?a=1&b=%2F+c"),
        ("wss://x.com", "/voice", "", False, "https://x.com/voice"),
    ],
)
def test_public_url(base: str, path: str, query: str, ws: bool, expected: str) -> None:
    assert public_url(base, path, query, websocket=ws) == expected


@pytest.mark.parametrize("base", ["abc.ngrok.app", "ftp://x.com", "https://", "https://x.com/?a=1", "https://x.com/#f"])
def test_public_url_rejects_unusable_bases(base: str) -> None:
    with pytest.raises(ValueError):
        public_url(base, "/voice")


def test_path_prefixed_base_url_validates_a_webhook_end_to_end() -> None:
    twilio_called = "https://x.com/tb/twilio/voice?tenant=a%20b"
    sig = compute_signature(twilio_called, PARAMS, TOKEN)
    rebuilt = public_url("https://x.com/tb", "/twilio/voice", "tenant=a%20b")
    assert validate_signature(rebuilt, PARAMS, sig, TOKEN)
    assert not validate_signature(public_url("https://x.com", "/twilio/voice", "tenant=a%20b"), PARAMS, sig, TOKEN)


@pytest.mark.parametrize(
    ("headers", "scheme", "ws", "expected"),
    [
        ({}, "http", False, "http://127.0.0.1:8000/p?q=1"),
        ({}, "ws", True, "ws://127.0.0.1:8000/p?q=1"),
        ({"X-Forwarded-Proto": "https"}, "http", False, "https://127.0.0.1:8000/p?q=1"),
        ({"x-forwarded-proto": "https", "x-forwarded-host": "pub.example"}, "ws", True, "wss://pub.example/p?q=1"),
        ({"X-Forwarded-Proto": "wss", "X-Forwarded-Host": "pub.example"}, "ws", True, "wss://pub.example/p?q=1"),
        (
            {"X-Forwarded-Proto": "https, http", "X-Forwarded-Host": "a.example, b"},
            "http",
            False,
            "https://a.example/p?q=1",
        ),
        ({"X-Forwarded-Proto": "gopher"}, "https", False, "https://127.0.0.1:8000/p?q=1"),
        ({"X-Forwarded-Proto": ""}, "wss", True, "wss://127.0.0.1:8000/p?q=1"),
        ({"X-Forwarded-Proto": "http"}, "https", True, "ws://127.0.0.1:8000/p?q=1"),
    ],
)
def test_url_from_forwarded(headers: dict[str, str], scheme: str, ws: bool, expected: str) -> None:
    assert url_from_forwarded(headers, scheme, "127.0.0.1:8000", "/p", "q=1", ws) == expected
    assert url_from_forwarded(Headers(headers), scheme, "127.0.0.1:8000", "/p", "q=1", ws) == expected


def test_forwarded_url_validates_a_websocket_signature_behind_a_tls_proxy() -> None:
    sig = compute_signature("wss://pub.example/media/tok", None, TOKEN)
    local = url_from_forwarded(
        Headers({"X-Forwarded-Proto": "https", "X-Forwarded-Host": "pub.example"}),
        "ws",
        "10.0.0.5:8000",
        "/media/tok",
        "",
        True,
    )
    assert validate_signature(local, None, sig, TOKEN)
    direct = url_from_forwarded({}, "ws", "10.0.0.5:8000", "/media/tok", "", True)
    assert not validate_signature(direct, None, sig, TOKEN)


def test_url_from_forwarded_needs_a_host() -> None:
    with pytest.raises(ValueError):
        url_from_forwarded({}, "https", "", "/p")
