"""The mark ledger: heard position from named marks; flushed echoes never credited to anyone."""

from hypothesis import given
from hypothesis import strategies as st

from telebridge.pipeline.ledger import Echo, MarkLedger


def test_echoes_advance_heard_position_in_order():
    ledger = MarkLedger()
    names = [ledger.sent(1, 640) for _ in range(3)]
    assert names == ["t1-640", "t1-1280", "t1-1920"]
    assert ledger.echoed(names[0]).outcome is Echo.PLAYED
    assert ledger.heard(1) == 640
    # Twilio plays in order: an echo of a later mark implies the earlier ones played.
    result = ledger.echoed(names[2])
    assert result.outcome is Echo.PLAYED and result.heard_offset == 1920
    assert ledger.echoed(names[1]).outcome is Echo.UNKNOWN  # already accounted for


def test_clear_flushes_pending_marks_and_their_echoes_are_not_credited():
    ledger = MarkLedger()
    a = [ledger.sent(1, 800) for _ in range(4)]
    ledger.echoed(a[0])
    assert ledger.clear() == [1]
    # the new reply starts; Twilio now echoes the flushed marks of turn 1
    b = ledger.sent(2, 800)
    for name in a[1:]:
        assert ledger.echoed(name).outcome is Echo.FLUSHED
    assert ledger.heard(1) == 800  # only what was played before the clear
    assert ledger.heard(2) == 0  # nothing credited to the next reply
    assert ledger.echoed(b).outcome is Echo.PLAYED and ledger.heard(2) == 800
    assert ledger.flushed_echoes == 3


def test_turn_finishes_when_closed_and_all_marks_played():
    ledger = MarkLedger()
    names = [ledger.sent(7, 160) for _ in range(2)]
    assert not ledger.close_turn(7)
    assert not ledger.echoed(names[0]).turn_finished
    assert ledger.echoed(names[1]).turn_finished
    assert ledger.close_turn(8)  # a turn with no audio is finished at once


def test_unknown_names_are_counted_not_fatal():
    ledger = MarkLedger()
    assert ledger.echoed("someone-else").outcome is Echo.UNKNOWN
    assert ledger.unknown_echoes == 1


@given(st.lists(st.tuples(st.sampled_from(["send1", "send2", "echo", "clear"]), st.integers(0, 50)), max_size=60))
def test_heard_never_exceeds_sent_and_each_mark_resolves_once(ops):
    ledger = MarkLedger()
    outstanding: list[str] = []  # marks Twilio still has to echo, in order
    resolved: list[str] = []
    for op, n in ops:
        if op.startswith("send"):
            outstanding.append(ledger.sent(int(op[-1]), n + 1))
        elif op == "echo" and outstanding:
            name = outstanding.pop(0)
            assert ledger.echoed(name).outcome in (Echo.PLAYED, Echo.FLUSHED)
            resolved.append(name)
        elif op == "clear":
            ledger.clear()
            for name in outstanding:  # Twilio echoes every pending mark at once
                assert ledger.echoed(name).outcome is Echo.FLUSHED
            outstanding.clear()
        for turn in (1, 2):
            assert 0 <= ledger.heard(turn) <= ledger.sent_samples(turn)
    assert len(resolved) == len(set(resolved))
