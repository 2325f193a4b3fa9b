"""When to ask the end-of-turn model, and what its answer means for one call (sans-I/O).

The VAD closes an utterance after ``min_silence_duration`` (0.55 s) of silence, and the turn engine then waits
``min_endpointing_delay``: a fixed wait that is too long after a finished question and too short for a caller who
pauses mid-thought. With the model on, each pause is a *candidate*: once the caller has been quiet for
:data:`ASK_AFTER` (and no agent reply is in flight), :class:`EndOfTurn` asks the model about the turn so far
(this utterance and the turn's earlier ones, the last 8 s). The pause is counted from the end of the caller's
loud audio (:attr:`.segmenter.VadSegmenter.pause_duration`). The model is surer of a finished sentence deeper
into the pause ("I have a terrible toothache." 0.15-0.38 at 0.1 s, complete at 0.2 s): an "incomplete" answer
is asked again once at :data:`ASK_AGAIN_AFTER`, and the later answer stands. An early answer can fall inside the
0.3 s between two sentences of one turn ("You have reached sales. | For new orders, press two."): the reply then
starts, but the turn engine holds its tools until the fixed endpointing delay has passed (``turns.Settle``), and a
caller who goes on before hearing it drops it with nothing done (an IVR agent pressed 1 twice before that rule).
The answer concerns that pause only -- speech that resumes makes it stale, and it is dropped:

* **complete** (probability ≥ threshold): the utterance is closed at once (no need to sit out the rest of the
  VAD's closing silence) and the engine answers as soon as the words are in -- unless the words themselves look
  unfinished ("my number is four one five", "I'd like to"), which always wins (:func:`.unfinished.looks_unfinished`);
* **incomplete**: the engine waits up to ``max_endpointing_delay`` for the caller to go on;
* **no answer** (model busy, failed, not installed): the fixed waits, as without the model.

:class:`EndOfTurn` is fed the call clock and returns :class:`Ask` requests; the call's shell runs them through
the process-wide :class:`~.turn_classifier.TurnClassifier` and hands the answer back to :meth:`verdict`, which
says what to do. No I/O, no clock of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .smart_turn import WINDOW_SECONDS

ASK_AFTER = 0.15  # seconds of quiet that make a pause a candidate (the early transcript started at 0.1 s when idle)
ASK_AGAIN_AFTER = 0.4  # ... and after an "incomplete" answer, once more this far into the same pause


@dataclass(frozen=True, slots=True)
class Ask:
    """Ask the model about the turn whose latest speech ended at ``voice_end``."""

    voice_end: float
    audio: np.ndarray  # float32 at ``rate``, the turn's last ≤ 8 s
    rate: int
    again: bool = False  # the second question about this pause (the first answer was "incomplete")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an answer means now: close the open utterance early (``close``), and tell the engine ``complete``."""

    voice_end: float
    complete: bool
    close: bool
    probability: float


class EndOfTurn:
    """Per-call: pause candidates in, :class:`Ask` out; answers in, :class:`Verdict` out (or nothing if stale)."""

    def __init__(self, threshold: float = 0.5, *, sample_rate: int = 16000) -> None:
        """``sample_rate``: the VAD's (8000 on phone calls); the classifier brings the audio to the model's rate."""
        self.threshold = threshold
        self.rate = sample_rate
        self._window = WINDOW_SECONDS * sample_rate
        self._turn: list[np.ndarray] = []  # audio of the turn's earlier utterances (≤ 8 s kept)
        self._turn_samples = 0
        self._asked: float | None = None  # voice_end of the pause asked about
        self._ask_again: float | None = None  # voice_end of a pause answered "incomplete" the first time
        self._answered_again = False  # the second answer about the current pause is in: earlier ones are old
        self._speaking = False  # an utterance is open
        self._voice_end: float | None = None  # latest voice_end seen (open utterance, or the last closed one)
        self.asked = 0
        self.stale = 0

    def window(self, *, speaking: bool, quiet: float, voice_end: float, awaiting: bool,
               snapshot) -> Ask | None:  # noqa: ANN001 - a callable returning the open utterance's audio
        """Each VAD window: ``speaking`` (an utterance is open), ``quiet`` (its closing silence so far),
        ``voice_end`` (the end of its last speech), ``awaiting`` (the caller's turn is open: no reply in flight,
        the agent not talking). ``snapshot()`` is only called when a question is asked."""
        self._speaking = speaking
        if not speaking:
            return None
        self._voice_end = voice_end
        if not awaiting:
            return None
        again = self._ask_again == voice_end and quiet >= ASK_AGAIN_AFTER
        if not again and (quiet < ASK_AFTER or self._asked == voice_end):
            return None
        if again:
            self._ask_again = None
        else:
            self._asked, self._answered_again = voice_end, False
        self.asked += 1
        return Ask(voice_end, self._turn_audio(snapshot()), self.rate, again=again)

    def quiet(self) -> None:
        """:meth:`window` while no utterance is open (it asks nothing then), without its arguments."""
        self._speaking = False

    def utterance_ended(self, audio: np.ndarray, voice_end: float) -> None:
        """An utterance closed (early or not): it becomes part of the turn's audio."""
        self._speaking = False
        self._voice_end = voice_end
        self._turn.append(np.asarray(audio, dtype=np.float32))
        self._turn_samples += len(audio)
        while self._turn and self._turn_samples - len(self._turn[0]) >= self._window:
            self._turn_samples -= len(self._turn.pop(0))

    def turn_answered(self) -> None:
        """The agent started replying: the next words start a new turn."""
        self._turn.clear()
        self._turn_samples = 0

    def outdated(self, ask: Ask) -> bool:
        """True once an answer to ``ask`` could no longer be used (:meth:`verdict` would drop it)."""
        return self._outdated(ask.voice_end, ask.again)

    def _outdated(self, voice_end: float, again: bool) -> bool:
        """The caller went on talking (a later voice end), or the second question about this pause has been
        answered and this is the first."""
        return voice_end != self._voice_end or (self._answered_again and not again)

    def verdict(self, voice_end: float, probability: float | None, *, again: bool = False) -> Verdict | None:
        """The model's answer about the pause at ``voice_end`` (to the second question about it if ``again``);
        ``None`` when it is stale or there is no answer."""
        if probability is None or self._outdated(voice_end, again):
            self.stale += probability is not None
            return None
        complete = probability >= self.threshold
        if again:
            self._answered_again = True
        elif not complete and self._speaking:
            self._ask_again = voice_end  # ask once more, deeper into the pause
        return Verdict(voice_end, complete, close=complete and self._speaking, probability=probability)

    def _turn_audio(self, current: np.ndarray) -> np.ndarray:
        parts = [*self._turn, np.asarray(current, dtype=np.float32)]
        audio = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return audio[-self._window :]
