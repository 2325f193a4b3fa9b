"""The campaign runner with scripted calls (outcomes per number) and a real SQLite state file: retries, skips,
stopping, crashes and re-runs (no row is ever dialed twice), and the results CSV."""

from __future__ import annotations

import asyncio
import csv
import time
from pathlib import Path

import pytest

from telebridge.outbound.calls import PlaceCallError
from telebridge.outbound.campaign.contacts import load_contacts, load_dnc
from telebridge.outbound.campaign.results import write_results
from telebridge.outbound.campaign.runner import CampaignRunner
from telebridge.outbound.campaign.scheduler import Policy
from telebridge.outbound.campaign.state import CampaignState
from telebridge.outbound.campaign.tracking import CallOutcome

A, B, C, D = "+14155550101", "+14155550102", "+14155550103", "+14155550104"


class Script:
    """Who answers: ``outcomes[number]`` is the status of each successive call to it (default completed)."""

    def __init__(self, outcomes: dict[str, list[str]] | None = None, call_seconds: float = 0.01) -> None:
        self.outcomes = {k: list(v) for k, v in (outcomes or {}).items()}
        self.call_seconds = call_seconds
        self.dialed: list[tuple[float, str, dict[str, str]]] = []
        self.tracked: list[str] = []
        self.status: dict[str, str] = {}
        self.hang_dial = self.hang_track = False
        self.dial_error: Exception | None = None

    async def dial(self, contact) -> str:
        if self.dial_error is not None:
            raise self.dial_error
        self.dialed.append((time.monotonic(), contact.to, contact.data))
        if self.hang_dial:
            await asyncio.Event().wait()
        sid = f"CA{len(self.dialed):032x}"
        queue = self.outcomes.get(contact.to) or []
        self.status[sid] = queue.pop(0) if queue else "completed"
        return sid

    async def track(self, sid: str) -> CallOutcome:
        self.tracked.append(sid)
        if self.hang_track:
            await asyncio.Event().wait()
        await asyncio.sleep(self.call_seconds)
        status = self.status[sid]
        answered = status == "completed"
        return CallOutcome(status=status, duration=12 if answered else 0, answered_by="human" if answered else None,
                           ended_reason="hung_up" if answered else status, summary="agent: Hi! | callee: Hello?"
                           if answered else None)

    def numbers(self) -> list[str]:
        return [to for _, to, _ in self.dialed]


def contacts_file(tmp_path: Path, rows: list[str], header: str = "phone,first_name") -> Path:
    path = tmp_path / "contacts.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def runner(path: Path, script: Script, state_path: Path, dnc: Path | None = None, **policy):
    header, contacts = load_contacts(path, dnc=load_dnc(dnc) if dnc else frozenset())
    state = CampaignState(state_path)
    r = CampaignRunner(contacts, state, Policy(**{"cps": 1000.0, **policy}), dial=script.dial, track=script.track)
    return r, header, contacts, state


def results(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


async def test_busy_and_no_answer_are_retried_with_backoff(tmp_path):
    path = contacts_file(tmp_path, [f"{A},Ada", f"{B},Bob", f"{C},Cy"])
    script = Script({A: ["busy", "no-answer", "completed"], B: ["busy", "busy", "busy"]})
    r, header, contacts, state = runner(path, script, tmp_path / "s.sqlite", retries=2, retry_delay=0.1,
                                        concurrency=3)
    counts = await r.run()
    assert counts == {"completed": 2, "busy": 1}
    assert script.numbers().count(A) == 3 and script.numbers().count(B) == 3 and script.numbers().count(C) == 1
    a_times = [t for t, to, _ in script.dialed if to == A]
    assert a_times[1] - a_times[0] >= 0.1 and a_times[2] - a_times[1] >= 0.2  # 0.1 s, then doubled
    write_results(tmp_path / "out.csv", header, contacts, state.states(contacts))
    rows = {row["phone"]: row for row in results(tmp_path / "out.csv")}
    assert rows[A]["status"] == "completed" and rows[A]["attempts"] == "3" and rows[A]["answered_by"] == "human"
    assert rows[B]["status"] == "busy" and rows[B]["attempts"] == "3" and rows[B]["ended_reason"] == "busy"
    assert [h["attempt"] for h in state.attempt_history(contacts[0].key)] == [1, 2, 3]


async def test_dnc_invalid_and_duplicate_rows_are_never_dialed(tmp_path):
    path = contacts_file(tmp_path, [f"{A},Ada", f"{B},Bob", "not-a-number,Nemo", f"{A},Ada again", f"{C},Cy"])
    dnc = tmp_path / "dnc.txt"
    dnc.write_text(f"# opted out\n{B}\n\n+1 (415) 555-0199\n")
    script = Script()
    r, header, contacts, state = runner(path, script, tmp_path / "s.sqlite", dnc=dnc)
    assert await r.run() == {"completed": 2, "dnc": 1, "invalid": 1, "duplicate": 1}
    assert script.numbers() == [A, C]
    assert script.dialed[0][2] == {"first_name": "Ada"}  # the row's other columns are the call's data
    write_results(tmp_path / "out.csv", header, contacts, state.states(contacts))
    statuses = [(row["phone"], row["status"], row["attempts"]) for row in results(tmp_path / "out.csv")]
    assert statuses == [(A, "completed", "1"), (B, "dnc", "0"), ("not-a-number", "invalid", "0"),
                        (A, "duplicate", "0"), (C, "completed", "1")]


async def test_stopping_lets_live_calls_finish_and_a_rerun_dials_only_the_rest(tmp_path):
    path = contacts_file(tmp_path, [f"+1415555011{i},n{i}" for i in range(6)])
    script = Script(call_seconds=0.3)
    r, _, _, state = runner(path, script, tmp_path / "s.sqlite", concurrency=2)
    task = asyncio.create_task(r.run())
    while len(script.dialed) < 2:
        await asyncio.sleep(0.01)
    r.stop()  # the first Ctrl-C
    counts = await task
    assert counts == {"completed": 2, "pending": 4}  # the two live calls finished; nothing more was dialed
    state.close()
    again = Script()
    r2, *_ = runner(path, again, tmp_path / "s.sqlite", concurrency=2)
    assert await r2.run() == {"completed": 6}
    assert sorted(script.numbers() + again.numbers()) == [f"+1415555011{i}" for i in range(6)]  # each once


async def test_a_crash_while_placing_a_call_never_redials_that_row(tmp_path):
    path = contacts_file(tmp_path, [f"{A},Ada", f"{B},Bob"])
    script = Script()
    script.hang_dial = True  # the process dies while Twilio is creating the call
    r, _, contacts, state = runner(path, script, tmp_path / "s.sqlite")
    task = asyncio.create_task(r.run())
    while not script.dialed:
        await asyncio.sleep(0.01)
    task.cancel()  # the second Ctrl-C (or a crash)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert state.get(contacts[0].key).status == "dialing"  # recorded before placing
    state.close()
    again = Script()
    r2, header, contacts, state2 = runner(path, again, tmp_path / "s.sqlite")
    assert await r2.run() == {"unknown": 1, "completed": 1}
    assert again.numbers() == [B]  # A may or may not have been called: at most once, so never again
    assert "at most once" in state2.get(contacts[0].key).ended_reason


async def test_a_call_left_live_is_followed_by_sid_on_the_next_run(tmp_path):
    path = contacts_file(tmp_path, [f"{A},Ada"])
    script = Script()
    script.hang_track = True
    r, _, contacts, state = runner(path, script, tmp_path / "s.sqlite")
    task = asyncio.create_task(r.run())
    while not script.tracked:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    sid = state.get(contacts[0].key).call_sid
    assert state.get(contacts[0].key).status == "live" and sid
    state.close()
    again = Script()
    again.status[sid] = "completed"
    r2, _, contacts, state2 = runner(path, again, tmp_path / "s.sqlite")
    assert await r2.run() == {"completed": 1}
    assert again.dialed == [] and again.tracked == [sid]
    assert state2.get(contacts[0].key).attempts == 1


async def test_finished_rows_are_not_dialed_by_a_rerun_even_with_new_rows(tmp_path):
    path = contacts_file(tmp_path, [f"{A},Ada", f"{B},Bob"])
    first = Script({B: ["busy"]})
    r, _, _, state = runner(path, first, tmp_path / "s.sqlite", retries=0)
    assert await r.run() == {"completed": 1, "busy": 1}
    state.close()
    path = contacts_file(tmp_path, [f"{C},Cy", f"{A},Ada", f"{B},Bob"])  # a row added at the top
    second = Script()
    r2, *_ = runner(path, second, tmp_path / "s.sqlite", retries=0)
    assert await r2.run() == {"completed": 2, "busy": 1}
    assert second.numbers() == [C]


async def test_bad_credentials_stop_the_campaign_and_use_no_attempt(tmp_path):
    path = contacts_file(tmp_path, [f"{A},Ada", f"{B},Bob"])
    script = Script()
    script.dial_error = PlaceCallError("Twilio rejected the credentials (20003)", kind="credentials", code=20003)
    r, _, contacts, state = runner(path, script, tmp_path / "s.sqlite")
    assert await r.run() == {"pending": 2}
    assert r.fatal == "Twilio rejected the credentials (20003)"
    assert state.get(contacts[0].key).attempts == 0


async def test_twilio_saying_the_number_is_invalid_is_final(tmp_path):
    path = contacts_file(tmp_path, [f"{A},Ada"])
    script = Script()
    script.dial_error = PlaceCallError("Twilio says the To number +*******0101 is invalid (21211)", kind="invalid_to",
                                       code=21211)
    r, *_ = runner(path, script, tmp_path / "s.sqlite", retries=3)
    assert await r.run() == {"invalid": 1}
    assert r.fatal is None


async def test_a_network_failure_while_dialing_is_unknown_and_stops(tmp_path):
    path = contacts_file(tmp_path, [f"{A},Ada", f"{B},Bob"])
    script = Script()
    script.dial_error = PlaceCallError("cannot reach Twilio at api.twilio.com: ConnectError", kind="network")
    r, *_ = runner(path, script, tmp_path / "s.sqlite", retries=3)
    assert await r.run() == {"unknown": 1, "pending": 1}
    assert r.fatal and "cannot reach Twilio" in r.fatal


async def test_results_csv_columns(tmp_path):
    path = contacts_file(tmp_path, [f"{A},Ada,VIP"], header="to,first_name,status")
    script = Script()
    r, header, contacts, state = runner(path, script, tmp_path / "s.sqlite")
    await r.run()
    write_results(tmp_path / "out.csv", header, contacts, state.states(contacts))
    (row,) = results(tmp_path / "out.csv")
    assert list(row) == ["to", "first_name", "status", "result_status", "duration", "answered_by", "ended_reason",
                         "attempts", "call_sid", "summary"]
    assert row == {"to": A, "first_name": "Ada", "status": "VIP", "result_status": "completed", "duration": "12",
                   "answered_by": "human", "ended_reason": "hung_up", "attempts": "1", "call_sid": f"CA{1:032x}",
                   "summary": "agent: Hi! | callee: Hello?"}
    assert script.dialed[0][2] == {"first_name": "Ada", "status": "VIP"}
