"""``telebridge campaign run``: the contacts file format, one-line errors, and a whole campaign end to end — the
real ``twilio`` SDK placing calls on the fake Twilio REST API, which rings simulated callees (busy, no answer, a
human who talks to the demo agent on a live telebridge), with a re-run that dials nothing again."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from conftest import AUTH_TOKEN
from fakes.twilio_api import FakeTwilioApi, FakeTwilioServer
from telebridge.cli import main
from telebridge.outbound.campaign.contacts import ContactsError, load_contacts, load_dnc
from telebridge.simulator.callee import Callee, busy, human, no_answer

ACCOUNT = "AC" + "5" * 32
CALLER_ID = "+14155550100"
A, B, C = "+14155550101", "+14155550102", "+14155550103"


class CalleesByAttempt(dict):
    """``callees[number]`` for the fake API: a list, one callee per successive call to that number."""

    def get(self, number, default=None):  # type: ignore[override]
        queue = super().get(number)
        return queue.pop(0) if queue else default


@pytest.fixture(scope="module")
def fake():
    api = FakeTwilioApi(AUTH_TOKEN)
    server = FakeTwilioServer(api).start()
    yield api, server.url
    server.stop()


@pytest.fixture
def env(fake, monkeypatch, tmp_path):
    _, url = fake
    monkeypatch.chdir(tmp_path)
    for key, value in {"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                       "TELEBRIDGE_TWILIO_API_BASE_URL": url,
                       "TELEBRIDGE_PUBLIC_URL": "https://bridge.example.com"}.items():
        monkeypatch.setenv(key, value)
    return monkeypatch


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- the contacts file ------------------------------------------------------------------------------------------


def test_contacts_format(tmp_path):
    path = write(tmp_path / "c.csv", "\ufeffName;Phone;TimeZone;plan\nAda;+1 415 555 0101;Europe/Paris;gold\n"
                                     "Bob;(415) 555-0102;;\n\n")
    header, contacts = load_contacts(path, region="US")
    assert header == ["Name", "Phone", "TimeZone", "plan"]
    ada, bob = contacts
    assert (ada.to, ada.data, ada.timezone) == (A, {"Name": "Ada", "plan": "gold"}, "Europe/Paris")
    assert (bob.to, bob.data, bob.timezone, bob.skip) == (B, {"Name": "Bob", "plan": ""}, None, None)
    assert ada.key != bob.key and load_contacts(path, region="US")[1][0].key == ada.key  # stable across runs


def test_a_to_column_named_like_twilios_field_is_the_number(tmp_path):
    (row,) = load_contacts(write(tmp_path / "c.csv", "To,name\n+14155550101,Ada\n"))[1]
    assert row.to == A and row.data == {"name": "Ada"}


def test_national_numbers_need_a_region(tmp_path):
    path = write(tmp_path / "c.csv", "to\n(415) 555-0101\n")
    (row,) = load_contacts(path)[1]
    assert row.skip == "invalid" and "E.164" in row.problem and "0101" in row.problem


@pytest.mark.parametrize(("text", "message"), [
    ("", "is empty"),
    ("name,email\nAda,a@example.com\n", "has no phone column: name one 'phone' or 'to' (columns: name, email)"),
    ("phone,name\n+14155550101,Ada,extra\n", "line 2: 3 fields but the header has 2"),
    ("phone,name,Name\n+14155550101,Ada,Ada\n", "line 1: column names must be non-empty and distinct"),
    ("phone,From\n+14155550101,me\n", "column 'From' is reserved"),
    ("phone,timezone\n+14155550101,Mars/Olympus\n", "line 2: unknown timezone 'Mars/Olympus'"),
    ("phone\n", "has a header but no rows"),
])
def test_malformed_contacts_are_refused_with_the_line(tmp_path, text, message):
    with pytest.raises(ContactsError, match=None) as info:
        load_contacts(write(tmp_path / "c.csv", text))
    assert message in str(info.value)


def test_dnc_file(tmp_path):
    assert load_dnc(write(tmp_path / "d.txt", "# opted out\n+1 415 555 0101\n\n+14155550102  # asked twice\n")) \
        == {A, B}
    with pytest.raises(ContactsError, match="line 2"):
        load_dnc(write(tmp_path / "d.txt", "+14155550101\nnope\n"))


# --- CLI errors: one line, non-zero exit ------------------------------------------------------------------------


@pytest.mark.parametrize(("argv_extra", "contacts", "setenv", "message"), [
    ([], "name\nAda\n", {}, "has no phone column"),
    ([], "phone,name\n+14155550101,Ada,x\n", {}, "line 2: 3 fields but the header has 2"),
    (["--from", "12345"], None, {}, "is not in E.164 form"),
    (["--quiet-hours", "9pm-9am"], None, {}, "are not HH:MM-HH:MM"),
    (["--timezone", "Nowhere/City"], None, {}, "unknown timezone 'Nowhere/City'"),
    (["--dnc", "missing.txt"], None, {}, "cannot read the do-not-call file missing.txt"),
    (["--concurrency", "0"], None, {}, "concurrency must be at least 1"),
    ([], None, {"TWILIO_AUTH_TOKEN": "wrong-token"}, "Twilio rejected the credentials"),
    ([], None, {"TELEBRIDGE_PUBLIC_URL": ""}, "TELEBRIDGE_PUBLIC_URL is not set"),
])
def test_cli_errors_are_one_line(env, fake, tmp_path, capsys, argv_extra, contacts, setenv, message):
    api, _ = fake
    path = write(tmp_path / "c.csv", contacts or f"phone,name\n{A},Ada\n")
    for key, value in setenv.items():
        env.setenv(key, value)
    before = len(api.calls)
    argv = ["campaign", "run", str(path), "--from", CALLER_ID, *argv_extra]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert message in err and err.startswith("telebridge: ") and err.count("\n") == 1, err
    assert "wrong-token" not in err and len(api.calls) == before  # nothing was dialed


def test_missing_contacts_file(env, capsys):
    assert main(["campaign", "run", "nope.csv", "--from", CALLER_ID]) == 2
    assert capsys.readouterr().err.startswith("telebridge: cannot read nope.csv")


# --- end to end -------------------------------------------------------------------------------------------------


def test_campaign_end_to_end_with_retries_dnc_and_a_rerun(fake, server, env, tmp_path, capsys):
    api, _ = fake
    api.server_url = server.url
    env.setenv("TELEBRIDGE_PUBLIC_URL", server.url)
    callees: dict[str, list[Callee]] = {A: [busy(), human()], B: [no_answer(0.2)] * 3}
    api.callees = CalleesByAttempt(callees)
    contacts = write(tmp_path / "contacts.csv", f"phone,first_name\n{A},Ada\n{B},Bob\n{C},Cy\n")
    dnc = write(tmp_path / "dnc.txt", f"{C}\n")
    argv = ["campaign", "run", str(contacts), "--from", CALLER_ID, "--dnc", str(dnc), "--retries", "2",
            "--retry-delay", "0.2", "--concurrency", "2", "--cps", "10", "--poll-interval", "0.2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "results in" in out and "contacts.results.csv" in out
    creates = [r for r in api.requests if r.method == "POST" and r.path.endswith("/Calls.json")]
    assert sorted(r.form["To"] for r in creates) == [A, A, B, B, B]  # C is on the do-not-call list
    assert all(r.form["From"] == CALLER_ID and r.auth == (ACCOUNT, AUTH_TOKEN) for r in creates)
    with (tmp_path / "contacts.results.csv").open(newline="") as f:
        rows = {row["phone"]: row for row in csv.DictReader(f)}
    assert rows[A]["status"] == "completed" and rows[A]["attempts"] == "2" and rows[A]["call_sid"].startswith("CA")
    assert rows[B]["status"] == "no-answer" and rows[B]["attempts"] == "3"
    assert rows[C]["status"] == "dnc" and rows[C]["attempts"] == "0" and rows[C]["call_sid"] == ""
    assert rows[A]["first_name"] == "Ada"
    # The re-run finds every row finished: it dials nothing.
    assert main(argv) == 0
    assert len([r for r in api.requests if r.method == "POST" and r.path.endswith("/Calls.json")]) == 5
    assert (tmp_path / "contacts.campaign.sqlite").exists()


async def test_tracking_polls_twilio_then_adds_the_services_ended_reason_and_summary(fake):
    import httpx

    from telebridge.outbound.campaign.tracking import RestTracker
    from telebridge.settings import Settings
    from fakes.twilio_api import FakeCall

    api, url = fake
    sid = "CA" + "7" * 32
    api.calls[sid] = FakeCall(sid, ACCOUNT, status="completed", direction="outbound-api", answered_by="human",
                              duration=31)
    seen = []

    def service(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.headers["authorization"]))
        return httpx.Response(200, json={"call_sid": sid, "ended_reason": "end_call: booked", "transcript": [
            {"role": "assistant", "content": "Hi Ada!"}, {"role": "user", "content": "Hello?"}]})

    settings = Settings(_env_file=None, twilio_account_sid=ACCOUNT, twilio_auth_token=AUTH_TOKEN,
                        twilio_api_base_url=url, public_url="https://bridge.example.com", api_key="service-key")
    tracker = RestTracker(settings, poll_interval=0.05, api_transport=httpx.MockTransport(service))
    try:
        outcome = await tracker(sid)
    finally:
        await tracker.aclose()
    assert outcome.model_dump() == {"status": "completed", "duration": 31, "answered_by": "human",
                                    "ended_reason": "end_call: booked", "summary": "agent: Hi Ada! | callee: Hello?"}
    assert seen == [(f"/v1/calls/{sid}", "Bearer service-key")]


def _run_in_subprocess(tmp_path: Path, fake_url: str, contacts: Path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
           "TELEBRIDGE_TWILIO_API_BASE_URL": fake_url, "TELEBRIDGE_PUBLIC_URL": "https://bridge.example.com"}
    argv = [sys.executable, "-m", "telebridge", "campaign", "run", str(contacts), "--from", CALLER_ID,
            "--concurrency", "2", "--cps", "50", "--retries", "0", "--poll-interval", "0.1"]
    return subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _creates(api) -> list:
    return [r for r in api.requests if r.method == "POST" and r.path.endswith("/Calls.json")]


def _wait_for_creates(api, before: int, count: int, proc) -> None:
    import time

    deadline = time.monotonic() + 30
    while len(_creates(api)) < before + count:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the campaign did not start dialing"
        time.sleep(0.02)


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_stops_dialing_and_lets_live_calls_finish(fake, tmp_path, presses):
    import signal
    import time

    api, url = fake
    numbers = [f"+1415555020{i}" for i in range(4)]
    api.callees = CalleesByAttempt({n: [no_answer(2.0)] for n in numbers})
    contacts = write(tmp_path / "contacts.csv", "phone\n" + "\n".join(numbers) + "\n")
    before = len(_creates(api))
    proc = _run_in_subprocess(tmp_path, url, contacts)
    _wait_for_creates(api, before, 2, proc)
    for _ in range(presses):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)  # (two signals sent at once may arrive as one)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "stopping: no new calls" in err and ("quitting" in err) == (presses == 2)
    assert len(_creates(api)) == before + 2  # nothing dialed after Ctrl-C
    with (tmp_path / "contacts.results.csv").open(newline="") as f:
        statuses = [row["status"] for row in csv.DictReader(f)]
    # One press: the two live calls were followed to their end. Two: abandoned, still live (a re-run follows them).
    assert statuses == (["no-answer"] * 2 if presses == 1 else ["live"] * 2) + ["pending"] * 2
    # A re-run dials only the two rows never dialed.
    proc = _run_in_subprocess(tmp_path, url, contacts)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert sorted(r.form["To"] for r in _creates(api)[before:]) == sorted(numbers)
