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
