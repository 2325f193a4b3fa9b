"""``telebridge numbers list`` / ``configure``: the real ``twilio`` SDK against the local fake of Twilio's REST API
(IncomingPhoneNumbers: paging, fetch, update, Basic auth, error codes)."""

from __future__ import annotations

import pytest

from fakes.twilio_api import FakeTwilioApi, FakeTwilioServer
from telebridge.cli import main
from telebridge.outbound.numbers import NumberNotFound, configure_number, list_numbers
from telebridge.settings import Settings

TOKEN = "numbers-test-token"
ACCOUNT = "AC" + "2" * 32
OTHER_ACCOUNT = "AC" + "3" * 32
HERE = "https://bridge.example.com"
FIELDS = {"VoiceUrl", "VoiceMethod", "StatusCallback", "StatusCallbackMethod"}


@pytest.fixture(scope="module")
def fake():
    api = FakeTwilioApi(TOKEN)
    server = FakeTwilioServer(api).start()
    yield api, server.url
    server.stop()


@pytest.fixture
def api(fake):
    api, _ = fake
    api.numbers.by_sid.clear()
    api.requests.clear()
    return api


@pytest.fixture
def env(fake, monkeypatch, tmp_path):
    """The CLI's environment: credentials, the fake's URL, this service's public URL; no stray .env."""
    _, url = fake
    monkeypatch.chdir(tmp_path)
    for key, value in {"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": TOKEN,
                       "TELEBRIDGE_TWILIO_API_BASE_URL": url, "TELEBRIDGE_PUBLIC_URL": HERE}.items():
        monkeypatch.setenv(key, value)
    return monkeypatch


def settings(url: str, **overrides) -> Settings:
    values = dict(twilio_account_sid=ACCOUNT, twilio_auth_token=TOKEN, twilio_api_base_url=url, public_url=HERE)
    values.update(overrides)
    return Settings(_env_file=None, **values)


async def test_list_follows_pages_and_tells_which_numbers_point_here(fake, api):
    _, url = fake
    for i in range(7):
        api.numbers.add(ACCOUNT, f"+1415555010{i}", voice_url=f"{HERE}/twilio/voice" if i % 2 else None)
    api.numbers.add(OTHER_ACCOUNT, "+14155550199")
    numbers = await list_numbers(settings(url), page_size=3)
    assert [n.phone_number for n in numbers] == [f"+1415555010{i}" for i in range(7)]
    assert [n.points_at(HERE) for n in numbers] == [bool(i % 2) for i in range(7)]
    pages = [r for r in api.requests if r.path.endswith("/IncomingPhoneNumbers.json")]
    assert len(pages) == 3 and all(r.auth == (ACCOUNT, TOKEN) for r in pages)


async def test_an_app_or_trunk_or_get_method_means_not_pointing_here(fake, api):
    _, url = fake
    api.numbers.add(ACCOUNT, "+14155550101", voice_url=f"{HERE}/twilio/voice", voice_application_sid="AP" + "1" * 32)
    api.numbers.add(ACCOUNT, "+14155550102", voice_url=f"{HERE}/twilio/voice", trunk_sid="TK" + "1" * 32)
    api.numbers.add(ACCOUNT, "+14155550103", voice_url=f"{HERE}/twilio/voice", voice_method="GET")
    verdicts = [n.where(HERE) for n in await list_numbers(settings(url))]
    assert verdicts == ["no (voice application overrides)", "no (SIP trunk overrides)",
                        "no (VoiceMethod GET, not POST)"]


async def test_configure_sets_exactly_the_four_fields(fake, api):
    _, url = fake
    api.numbers.add(ACCOUNT, "+14155550123", voice_url="https://old.example.com/voice", voice_method="GET",
                    voice_fallback_url="https://fallback.example.com/", friendly_name="Front desk")
    plan = await configure_number(settings(url), "+1 415 555 0123", "https://new.example.com")
    assert plan.applied and plan.number.points_at("https://new.example.com")
    (update,) = api.numbers.updates("+14155550123")
    assert update.form == {"VoiceUrl": "https://new.example.com/twilio/voice", "VoiceMethod": "POST",
                           "StatusCallback": "https://new.example.com/twilio/call-status",
                           "StatusCallbackMethod": "POST"}
    assert update.auth == (ACCOUNT, TOKEN)
    fields = api.numbers.get("+14155550123").fields
    assert fields["voice_fallback_url"] == "https://fallback.example.com/"  # untouched
    assert fields["friendly_name"] == "Front desk"


async def test_configure_twice_changes_nothing_the_second_time(fake, api):
    _, url = fake
    api.numbers.add(ACCOUNT, "+14155550123")
    await configure_number(settings(url), "+14155550123", HERE)
    again = await configure_number(settings(url), "+14155550123", HERE)
    assert not again.needed and not again.applied
    assert len(api.numbers.updates("+14155550123")) == 1


async def test_configure_works_with_an_api_key(fake, api):
    _, url = fake
    api.numbers.api_keys["SK" + "9" * 32] = "key-secret"
    api.numbers.add(ACCOUNT, "+14155550123")
    s = settings(url, twilio_auth_token=None, twilio_api_key_sid="SK" + "9" * 32, twilio_api_key_secret="key-secret")
    assert (await configure_number(s, "+14155550123", HERE)).applied
    assert api.numbers.updates()[0].auth == ("SK" + "9" * 32, "key-secret")


async def test_unknown_number(fake, api):
    _, url = fake
    api.numbers.add(OTHER_ACCOUNT, "+14155550123")
    with pytest.raises(NumberNotFound):
        await configure_number(settings(url), "+14155550123", HERE)


# --- the CLI ---------------------------------------------------------------------------------------------------


def test_cli_list_prints_numbers_in_full(env, api, capsys):
    api.numbers.add(ACCOUNT, "+14155550123", friendly_name="Sales line", voice_url=f"{HERE}/twilio/voice")
    api.numbers.add(ACCOUNT, "+14155550124", friendly_name="Old line", voice_url="https://elsewhere.example/x")
    assert main(["numbers", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NUMBER", "FRIENDLY", "NAME", "VOICE", "URL", "POINTS", "HERE"]
    assert lines[1].startswith("+14155550123  Sales line") and lines[1].endswith("yes")
    assert lines[2].startswith("+14155550124  Old line") and lines[2].endswith("no")


def test_cli_configure_warns_about_an_overriding_app(env, api, capsys):
    api.numbers.add(ACCOUNT, "+14155550123", voice_application_sid="AP" + "1" * 32)
    assert main(["numbers", "configure", "+14155550123"]) == 0
    out, err = capsys.readouterr()
    assert "VoiceApplicationSid AP" in err and err.startswith("warning: +14155550123")
    assert "set VoiceUrl: (empty) -> https://bridge.example.com/twilio/voice" in out
    assert set(api.numbers.updates()[0].form) == FIELDS  # the app is left alone


def test_cli_configure_warns_about_a_trunk(env, api, capsys):
    api.numbers.add(ACCOUNT, "+14155550123", trunk_sid="TK" + "1" * 32)
    assert main(["numbers", "configure", "+14155550123", "--url", "https://other.example.com"]) == 0
    assert "TrunkSid TK" in capsys.readouterr().err
    assert api.numbers.updates()[0].form["VoiceUrl"] == "https://other.example.com/twilio/voice"


def test_cli_dry_run_changes_nothing(env, api, capsys):
    api.numbers.add(ACCOUNT, "+14155550123", voice_url="https://old.example.com/voice")
    before = dict(api.numbers.get("+14155550123").fields)
    assert main(["numbers", "configure", "+14155550123", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would set VoiceUrl: https://old.example.com/voice -> https://bridge.example.com/twilio/voice" in out
    assert "would set StatusCallback: (empty) -> https://bridge.example.com/twilio/call-status" in out
    assert "VoiceMethod" not in out  # already POST: only real changes are listed
    assert out.endswith("dry run: nothing was changed\n")
    assert api.numbers.updates() == [] and api.numbers.get("+14155550123").fields == before


@pytest.mark.parametrize(("argv", "setenv", "message"), [
    (["numbers", "configure", "4155550123"], {}, "is not in E.164 form"),
    (["numbers", "configure", "+1415"], {}, "not a possible phone number"),
    (["numbers", "configure", "+14155550199"], {}, "is not a phone number of account"),
    (["numbers", "configure", "+14155550123", "--url", "http://plain.example.com"], {}, "is not https://"),
    (["numbers", "list"], {"TWILIO_AUTH_TOKEN": "wrong"}, "Twilio rejected the credentials"),
    (["numbers", "list"], {"TWILIO_AUTH_TOKEN": ""}, "no Twilio credentials"),
    (["numbers", "configure", "+14155550123"], {"TELEBRIDGE_PUBLIC_URL": ""}, "no URL: pass --url"),
    (["numbers", "list"], {"TELEBRIDGE_TWILIO_API_BASE_URL": "http://127.0.0.1:9"}, "cannot reach Twilio's API"),
])
def test_cli_errors_are_one_line(env, api, capsys, argv, setenv, message):
    api.numbers.add(ACCOUNT, "+14155550123")
    for key, value in setenv.items():
        env.setenv(key, value)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and message in err and err.count("\n") == 1 and err.startswith("telebridge: "), err
    if "wrong" in setenv.values():
        assert "20003" in err and "wrong" not in err
