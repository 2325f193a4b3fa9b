"""``telebridge doctor`` against a real telebridge (LiveServer) and the fake Twilio REST API: passes when all is
set up, and fails with a fix for each thing that is not."""

from __future__ import annotations

import pytest

from conftest import AUTH_TOKEN, LiveServer, free_port
from fakes.twilio_api import FakeTwilioApi, FakeTwilioServer
from telebridge.cli import main
from telebridge.doctor import render, run_checks
from telebridge.settings import Settings

ACCOUNT = "AC" + "4" * 32


@pytest.fixture(scope="module")
def fake():
    api = FakeTwilioApi(AUTH_TOKEN)
    server = FakeTwilioServer(api).start()
    yield api, server.url
    server.stop()


@pytest.fixture
def api(fake):
    api, _ = fake
    api.numbers.by_sid.clear()
    return api


@pytest.fixture(scope="module")
def unguarded():
    """A telebridge that does not check signatures (TELEBRIDGE_VALIDATE_SIGNATURES=false)."""
    srv = LiveServer(validate_signatures=False).start()
    yield srv
    srv.stop()


def settings(fake_url: str, public: str | None, **overrides) -> Settings:
    values = dict(twilio_account_sid=ACCOUNT, twilio_auth_token=AUTH_TOKEN, twilio_api_base_url=fake_url,
                  public_url=public)
    values.update(overrides)
    return Settings(_env_file=None, **values)


def by_label(checks) -> dict:
    return {c.label: c for c in checks}


async def test_all_checks_pass_on_a_correct_setup(fake, api, server):
    _, fake_url = fake
    api.numbers.add(ACCOUNT, "+14155550123", voice_url=f"{server.url}/twilio/voice",
                    status_callback=f"{server.url}/twilio/call-status")
    api.numbers.add(ACCOUNT, "+14155550124", voice_url="https://another-app.example.com/voice")  # not ours: ignored
    checks = await run_checks(settings(fake_url, server.url), allow_http=True)
    assert [c.ok for c in checks] == [True] * len(checks), render(checks)
    assert [c.label for c in checks] == [
        "TWILIO_ACCOUNT_SID", "Twilio credentials", "TWILIO_AUTH_TOKEN (webhook signatures)", "TELEBRIDGE_PUBLIC_URL",
        "Twilio accepts the credentials", "public URL reaches telebridge", "signed webhook accepted",
        "unsigned webhook refused (403)", "number +14155550123"]
    assert render(checks)[-1] == "all checks passed"


def test_cli_exit_code_zero_when_healthy_one_when_not(fake, api, server, monkeypatch, tmp_path, capsys):
    _, fake_url = fake
    api.numbers.add(ACCOUNT, "+14155550123", voice_url=f"{server.url}/twilio/voice")
    monkeypatch.chdir(tmp_path)
    for key, value in {"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                       "TELEBRIDGE_TWILIO_API_BASE_URL": fake_url, "TELEBRIDGE_PUBLIC_URL": server.url}.items():
        monkeypatch.setenv(key, value)
    assert main(["doctor", "--allow-http"]) == 0
    out = capsys.readouterr().out
    assert "✓ public URL reaches telebridge" in out and "✗" not in out
    assert main(["doctor"]) == 1  # without --allow-http, http:// is a problem
    out = capsys.readouterr().out
    assert "✗ TELEBRIDGE_PUBLIC_URL: http://127.0.0.1" in out and "    fix: Twilio needs an https webhook" in out
    assert main(["doctor", "--allow-http", "--number", "12"]) == 2
    assert capsys.readouterr().err.startswith("telebridge: ")


async def test_wrong_token_fails_credentials_and_signatures_with_fixes(fake, api, server):
    _, fake_url = fake
    checks = by_label(await run_checks(settings(fake_url, server.url, twilio_auth_token="not-the-token"),
                                       allow_http=True))
    assert checks["Twilio accepts the credentials"].ok is False
    assert "20003" in checks["Twilio accepts the credentials"].detail
    assert "TWILIO_AUTH_TOKEN" in checks["Twilio accepts the credentials"].fix
    signed = checks["signed webhook accepted"]
    assert signed.ok is False and "403" in signed.detail and "same TWILIO_AUTH_TOKEN" in signed.fix
    assert checks["unsigned webhook refused (403)"].ok is True
    assert checks["numbers point here"].ok is None  # skipped: the numbers cannot be listed without credentials


async def test_unreachable_public_url(fake, api):
    _, fake_url = fake
    public = f"http://127.0.0.1:{free_port()}"
    checks = by_label(await run_checks(settings(fake_url, public), allow_http=True))
    reach = checks["public URL reaches telebridge"]
    assert reach.ok is False and "ConnectError" in reach.detail and "telebridge serve" in reach.fix
    assert checks["signed webhook accepted"].ok is None  # skipped, not a second failure


async def test_a_url_that_reaches_something_else(fake, api):
    _, fake_url = fake
    checks = by_label(await run_checks(settings(fake_url, fake_url), allow_http=True))
    reach = checks["public URL reaches telebridge"]
    assert reach.ok is False and "not telebridge's health JSON" in reach.detail and "TELEBRIDGE_PORT" in reach.fix


async def test_a_server_that_does_not_check_signatures(fake, api, unguarded):
    _, fake_url = fake
    api.numbers.add(ACCOUNT, "+14155550123", voice_url=f"{unguarded.url}/twilio/voice")
    checks = by_label(await run_checks(settings(fake_url, unguarded.url), allow_http=True))
    assert checks["signed webhook accepted"].ok is True
    unsigned = checks["unsigned webhook refused (403)"]
    assert unsigned.ok is False and "HTTP 200" in unsigned.detail and "VALIDATE_SIGNATURES" in unsigned.fix


async def test_numbers_that_do_not_point_here(fake, api, server):
    _, fake_url = fake
    api.numbers.add(ACCOUNT, "+14155550123", voice_url=f"{server.url}/twilio/voice",
                    voice_application_sid="AP" + "1" * 32)
    api.numbers.add(ACCOUNT, "+14155550124", voice_url="https://elsewhere.example.com/voice")
    checks = by_label(await run_checks(settings(fake_url, server.url), allow_http=True,
                                       numbers=["+14155550123", "+14155550124", "+14155550125"]))
    app = checks["number +14155550123"]
    assert app.ok is False and "VoiceApplicationSid AP" in app.detail
    assert app.fix.startswith("telebridge numbers configure +14155550123")
    other = checks["number +14155550124"]
    assert other.ok is False and "https://elsewhere.example.com/voice" in other.detail
    assert checks["number +14155550125"].detail == "not a number of this account"


async def test_no_number_points_here(fake, api, server):
    _, fake_url = fake
    api.numbers.add(ACCOUNT, "+14155550124", voice_url="https://elsewhere.example.com/voice")
    checks = by_label(await run_checks(settings(fake_url, server.url), allow_http=True))
    none = checks["numbers point here"]
    assert none.ok is False and "telebridge numbers configure" in none.fix


async def test_missing_settings_each_have_a_fix():
    checks = await run_checks(Settings(_env_file=None), allow_http=True)
    failed = [c for c in checks if c.ok is False]
    assert [c.label for c in failed] == ["TWILIO_ACCOUNT_SID", "Twilio credentials",
                                         "TWILIO_AUTH_TOKEN (webhook signatures)", "TELEBRIDGE_PUBLIC_URL"]
    assert all(c.fix for c in failed)
    assert render(checks)[-1] == "4 problems found"


async def test_api_key_alone_cannot_check_signatures(fake, api, server):
    _, fake_url = fake
    s = settings(fake_url, server.url, twilio_auth_token=None, twilio_api_key_sid="SK" + "1" * 32,
                 twilio_api_key_secret="secret")
    api.numbers.api_keys["SK" + "1" * 32] = "secret"
    checks = by_label(await run_checks(s, allow_http=True))
    assert checks["Twilio accepts the credentials"].ok is True
    assert checks["TWILIO_AUTH_TOKEN (webhook signatures)"].ok is False
    assert checks["signed webhook accepted"].ok is None
