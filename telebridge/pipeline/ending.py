"""How a call ends: the built-in tools' ``end_call`` / ``transfer_call``, and the turn engine's HangUp / Transfer
carried out through the call's control (by default Twilio's REST API, when the settings hold credentials and the
call has a CallSid).

The tools only *ask*: the engine winds the call down (the current reply plays out, a goodbye if the agent said
nothing) and then hands back one :class:`~.turns.HangUp` or :class:`~.turns.Transfer`, which :meth:`CallEnding.end`
carries out. After a successful hang-up or transfer Twilio stops the stream itself; the session closes anyway
after :data:`HANGUP_CLOSE_AFTER` (and at once when there is no control, or it failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from .turns import HangUp, Transfer

if TYPE_CHECKING:
    from .call import CallSession

log = logging.getLogger("telebridge.call")

# After a successful REST hang-up Twilio stops the stream itself; if it has not within this time, we close.
HANGUP_CLOSE_AFTER = 5.0


class CallEnding:
    """``control`` hangs up / transfers the call (``hang_up()``, ``transfer(target, **options)``, ``aclose()``)."""

    def __init__(self, session: CallSession, control: Any | None) -> None:
        self.session = session
        self.control = control

    def configured(self) -> None:
        """The agent is configured: without a control of its own, the call gets the default one (if any)."""
        if self.control is None:
            self.control = self._default_control()

    def _default_control(self) -> Any | None:
        s = self.session
        call_sid = str(s.custom_data.get("CallSid") or "")
        if not call_sid.startswith("CA"):
            return None
        from ..twilio.rest import TwilioCallControl

        return TwilioCallControl.from_settings(s.runtime.settings, call_sid, s.custom_data.get("AccountSid"))

    # --- the built-in tools ---------------------------------------------------------------------------------
    def request_end_call(self, reason: str) -> None:
        """``end_call``: the current reply plays out, a goodbye only if the agent said nothing, then hang up."""
        s = self.session
        if s.engine is None or s.config is None:
            return
        s.ended_reason = "end_call"
        s._event("end_call", reason)
        s._run_actions(s.engine.request_end(s._now, "end_call", say=s.config.goodbye_message, only_if_silent=True))

    def request_transfer(self, target: str, name: str) -> None:
        s = self.session
        if s.engine is None or s.config is None:
            return
        s.ended_reason = "transfer_call"
        s._event("transfer_call", name)
        s._run_actions(
            s.engine.request_end(
                s._now, "transfer_call", say=s.config.transfer_message, only_if_silent=True, transfer_to=target,
            )
        )

    # --- the engine's HangUp / Transfer ---------------------------------------------------------------------
    async def end(self, action: HangUp | Transfer) -> None:
        s = self.session
        control = self.control
        s.ended_reason = s.ended_reason or action.reason
        if isinstance(action, Transfer):
            from ..twilio.transfer import transfer_options

            s._event("transfer", action.target)
            s._observe("call_ending", "transfer_call")
            options = transfer_options(s.config, s.custom_data, s.runtime.settings, s.whisper_endpoint)
            ok = control is not None and await control.transfer(action.target, **options)
            if not ok:
                log.error("call %s: transfer to %s failed; hanging up", s.call_id, action.target)
        else:
            s._event("hangup", action.reason)
            s._observe("call_ending", action.reason)
            ok = control is not None and await control.hang_up()
        if ok:
            await asyncio.sleep(HANGUP_CLOSE_AFTER)  # Twilio stops the stream; this is only a safety net
        await s._close(1000, "call ended")

    # --- an operator's hang-up and transfer (the console) --------------------------------------------------
    def hang_up_now(self, reason: str) -> asyncio.Task:
        """End the call at once, without a goodbye, the way the engine's HangUp does: through the control (phone:
        Twilio's REST API), or by closing the session when there is none (realtime, or no credentials)."""
        s = self.session
        s.ended_reason = s.ended_reason or reason
        return s._spawn(self.end(HangUp(reason)), "hang-up-now")

    async def transfer_now(self, target: str, reason: str) -> bool:
        """Transfer the call at once to ``target`` (E.164 or sip:). True once Twilio took it: the call then ends as
        after ``transfer_call``. False, and the conversation goes on, when there is no control or Twilio refused."""
        from ..twilio.transfer import transfer_options

        s = self.session
        if self.control is None or s.config is None:
            return False
        options = transfer_options(s.config, s.custom_data, s.runtime.settings, s.whisper_endpoint)
        if not await self.control.transfer(target, **options):
            return False
        s.ended_reason = s.ended_reason or reason
        s._event("transfer", target)
        s._observe("call_ending", reason)
        s._spawn(self._close_after(HANGUP_CLOSE_AFTER), "transferred")
        return True

    async def _close_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)  # Twilio stops the stream; this is only a safety net
        await self.session._close(1000, "call ended")

    async def aclose(self) -> None:
        closer = getattr(self.control, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()
