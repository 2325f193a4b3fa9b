"""The bench's Telebridge-vs-Pipecat verdicts (``bench/cpu_compare.py``): a Pipecat that fell behind is judged by
the work it did, never by a figure that flatters telebridge."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.cpu_compare import per_duplex_second, print_comparison  # noqa: E402 - needs the path above


@dataclass
class _Stats:
    agent_audio_ratio_mean: float


@dataclass
class _Row:
    scenario: str
    n: int
    ms_per_call_s: float
    ms_per_processed_s: float | None = None
    stats: _Stats | None = None
    health: tuple[float, float, float] = (1.0, 2.0, 3.0)
    vad_drops: int = 0
    behind_s: float | None = None
    paced_ms_per_call_s: float | None = None


def test_a_talking_pipecat_is_judged_by_the_stream_it_got_further_through() -> None:
    # 43.6 ms per wall-clock call-second; caller audio through the VAD at 43.6 / 73.8 = 0.59 of real time, agent
    # audio at 0.50: the work it did is at most 0.59 of a real-time call's, which so costs at least 73.8.
    assert per_duplex_second(43.6, 73.8, 0.50) == pytest.approx(73.8)
    # The agent audio further along than the caller audio: that share bounds the work.
    assert per_duplex_second(43.6, 100.0, 0.80) == pytest.approx(43.6 / 0.80)
    assert per_duplex_second(43.6, 73.8, None) == 73.8


def test_the_verdicts_use_the_work_done_only_for_a_pipecat_that_fell_behind(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        _Row("duplex", 25, 15.0, stats=_Stats(1.0)),
        _Row("pipecat-duplex", 25, 43.6, 73.8, stats=_Stats(0.50), behind_s=8.0),  # behind: 73.8 counts -> 4.9x
        _Row("inbound", 25, 9.0),
        _Row("pipecat", 25, 45.0, 50.0, behind_s=0.1),  # kept up: its wall-clock figure counts -> 5.0x
    ]
    print_comparison(rows, 5.0, {"inbound": "pipecat", "duplex": "pipecat-duplex"}, ("duplex", "pipecat-duplex"))
    out = capsys.readouterr().out
    duplex = next(line for line in out.splitlines() if " duplex " in line)
    inbound = next(line for line in out.splitlines() if " inbound " in line)
    assert "4.9x" in duplex and "short (14.76 needed)" in duplex
    assert "5.0x" in inbound and "meets" in inbound and "processed" not in inbound


def test_the_floor_table_reads_inbound_against_both_floors(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        _Row("baseline", 25, 3.8),
        _Row("floor", 25, 1.7, paced_ms_per_call_s=2.9),
        _Row("inbound", 25, 9.4),
        _Row("inbound-awake", 25, 11.0),  # (its quiet calls' windows at every tick)
        _Row("baseline", 50, 3.0),
        _Row("floor", 50, 1.2),  # (no paced figure: an older floor)
        _Row("inbound", 50, 7.5),
    ]
    print_comparison(rows, 5.0, {"inbound": "pipecat"}, ())
    out = capsys.readouterr().out
    at25 = next(line for line in out.splitlines() if line.startswith(" 25 "))
    at50 = next(line for line in out.splitlines() if line.startswith(" 50 "))
    # 9.4 / (3.8 + 1.7) = 1.71x against the target's floor; 9.4 / (3.8 + 2.9) = 1.40x against the paced one.
    assert at25.split()[5] == "1.71x" and at25.split()[-2:] == ["2.90", "1.40x"]
    assert at25.split()[6:8] == ["11.00", "2.00x"]  # 11.0 / (3.8 + 1.7)
    assert at50.split()[5] == "1.79x" and at50.split()[6:8] == ["-", "-"] and at50.split()[-2:] == ["-", "-"]
    assert "paced floor:" in out and "target is against the back-to-back floor" in out
