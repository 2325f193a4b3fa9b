"""Who answered an outbound call, and what the agent does about it: the asyncio side of answering machines.

Two witnesses, whichever speaks first: Twilio's AMD verdict (``AnsweredBy``, from the AMD callback) and the
beep on the call's own audio (:class:`~.beep.BeepDetector`, outbound calls only, for at most
:data:`BEEP_LISTEN_SECONDS`). On a machine the agent's ``on_answering_machine`` handler decides (given
:data:`DECIDE_TIMEOUT` at most; then ``voicemail_message`` or a hang-up), the message waits for the beep (a
verdict that came before the greeting ended waits at most ``VOICEMAIL_BEEP_WAIT``), then the turn engine winds
the call down. The verdict is also put in ``session_data["answered_by"]`` and sent to the agent's event handler
``on_answering_machine`` if it has one. Nothing here can keep the agent silent past a deadline.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from .beep import BeepDetector

if TYPE_CHECKING:
    from .call import CallSession

log = logging.getLogger("telebridge.answering")

__all__ = ["CalleeWatch", "first_speaker_waits"]

DECIDE_TIMEOUT = 2.0
BEEP_LISTEN_SECONDS = 60.0
VOICEMAIL_BEEP_WAIT = 8.0
MACHINE_VERDICTS = ("machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax")


def first_speaker_waits(first_speaker: str, custom_data: dict[str, Any]) -> bool:
    """True when the greeting waits for the callee: ``callee``, or ``auto`` on an outbound call."""
    if first_speaker == "callee":
        return True
    if first_speaker == "agent":
        return False
    return str(custom_data.get("Direction", "")).startswith("outbound")


class CalleeWatch:
    def __init__(self, session: CallSession, *, outbound: bool, detect_beep: bool, rate: int) -> None:
        self.session = session
        self.answered_by: str | None = None
        self.source: str | None = None
        self._machine = False
        self._beep_heard = asyncio.Event()
        self._detector = BeepDetector(rate) if outbound and detect_beep and rate == 8000 else None
        self._listened = 0
        self._limit = int(BEEP_LISTEN_SECONDS * rate)

    # --- inputs ---------------------------------------------------------------------------------------------
    def feed(self, pcm: np.ndarray) -> None:
        """Caller audio (hot path): the beep detector, while it still matters."""
        detector = self._detector
        if detector is None:
            return
        self._listened += len(pcm)
        if self._listened > self._limit or self.answered_by == "human":
            self._detector = None
            return
        beep = detector.push(pcm)
        if beep is not None:
            log.info("call %s: beep at %.2f-%.2f s (%.0f Hz)", self.session.call_id, beep.start, beep.end,
                     beep.frequency)
            self.session._event("beep", f"{beep.frequency:.0f} Hz")
            self._beep_heard.set()
            self._detector = None
            if not self._machine:
                self.verdict("machine_end_beep", source="beep")

    def verdict(self, answered_by: str, *, source: str) -> None:
        """Twilio's AMD verdict, or the beep detector's."""
        session = self.session
        if self._machine and answered_by == "human":
            return  # a beep was heard: a late "human" does not undo the voicemail
        self.answered_by, self.source = answered_by, source
        session.session_data["answered_by"] = answered_by
        session._event("answered_by", f"{answered_by} ({source})")
        session._fire("on_answering_machine" if answered_by in MACHINE_VERDICTS else "on_callee_answered",
                      {"answered_by": answered_by, "source": source})
        engine = session.engine
        if engine is None:
            return
        if answered_by == "human":
            session._run_actions(engine.callee_is_human(session._now))
        elif answered_by in MACHINE_VERDICTS and not self._machine:
            self._machine = True
            session._spawn(self._on_machine(answered_by, source), "answering-machine")

    # --- the decision ---------------------------------------------------------------------------------------
    async def _decide(self, answered_by: str, source: str) -> str | None:
        """The message to leave, or None to hang up."""
        cfg = self.session.config
        assert cfg is not None
        default = cfg.voicemail_message if answered_by != "fax" else None
        handler = cfg.on_answering_machine
        if handler is None:
            return default
        try:
            decision = await asyncio.wait_for(
                handler({"session_data": self.session.session_data, "call_id": self.session.call_id,
                         "answered_by": answered_by, "source": source}),
                timeout=DECIDE_TIMEOUT,
            )
        except asyncio.TimeoutError:
            log.warning("call %s: on_answering_machine took over %.0f s; using the default", self.session.call_id,
                        DECIDE_TIMEOUT)
            return default
        except Exception:
            log.exception("call %s: on_answering_machine raised; using the default", self.session.call_id)
            return default
        if decision is None:
            return default
        if decision in ("hang_up", "hangup"):
            return None
        if decision in ("leave_message", "voicemail"):
            return cfg.voicemail_message
        if isinstance(decision, str) and decision.strip():
            return decision
        return default

    async def _on_machine(self, answered_by: str, source: str) -> None:
        session = self.session
        message = await self._decide(answered_by, source)
        greeting_over = answered_by.startswith("machine_end") or self._beep_heard.is_set()
        if message and not greeting_over:
            try:  # the greeting is still playing: the message starts after the beep (or a deadline)
                await asyncio.wait_for(self._beep_heard.wait(), timeout=VOICEMAIL_BEEP_WAIT)
            except asyncio.TimeoutError:
                pass
        if session.engine is None:
            return
        session.ended_reason = session.ended_reason or ("voicemail" if message else "answering_machine")
        log.info("call %s: answering machine (%s): %s", session.call_id, answered_by,
                 "leaving a message" if message else "hanging up")
        session._run_actions(session.engine.answering_machine(session._now, message))
