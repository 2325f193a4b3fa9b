"""Utterance segmentation (sans-I/O): speech probabilities in, utterances out.

:class:`VadSegmenter` is fed one window at a time (the ``on_window(prob, window, end_time)`` callback of a
:class:`~telebridge.pipeline.vad.VadStream`) and returns ``SpeechStarted`` / ``SpeechEnded`` (with the utterance
audio) / ``SpeechTruncated`` events, with the same parameters and hysteresis as Jay's ``VAD.Silero``
(:class:`SegmenterParams`). Pure and deterministic: no clock but the window end times it is given.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "SegmenterParams",
    "VadSegmenter",
    "SegmentEvent",
    "SpeechStarted",
    "SpeechEnded",
    "SpeechTruncated",
]


@dataclass(frozen=True, slots=True)
class SegmenterParams:
    """Same names and defaults as Jay's ``VAD.Silero`` (seconds / probability).

    ``sample_rate`` must be the rate of the windows pushed (8000 for a VadStream fed
    with phone audio): durations are counted in samples at this rate.
    """

    min_speech_duration: float = 0.05
    min_silence_duration: float = 0.55
    prefix_padding_duration: float = 0.5
    max_buffered_speech: float = 60.0
    activation_threshold: float = 0.5
    sample_rate: int = 16000

    @property
    def deactivation_threshold(self) -> float:
        return max(self.activation_threshold - 0.15, 0.01)


LOUD_RANGE = 10 ** (-35 / 10)
"""A window whose energy is within 35 dB of the utterance's loudest still counts as the caller's voice for
:attr:`VadSegmenter.pause_duration` (Piper and real voices fall below it within ~20 ms of their last
consonant; line noise above it simply leaves Silero's timing in charge)."""


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    t: float  # onset: start time of the first above-threshold window


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """``audio`` spans [onset - prefix padding, t + min_silence_duration], float32."""

    t: float  # end of the last speech window (start of the closing silence)
    audio: np.ndarray = field(repr=False)
    duration: float  # speech time from onset to ``t``, excluding padding
    truncated: bool = False  # ``max_buffered_speech`` was hit; audio holds the start


@dataclass(frozen=True, slots=True)
class SpeechTruncated:
    t: float  # time at which the buffer filled up


SegmentEvent = SpeechStarted | SpeechEnded | SpeechTruncated


class VadSegmenter:
    """Probabilities in, speech segments out.  Pure, deterministic, no clocks.

    Hysteresis as in Silero's own ``VADIterator`` and Jay's stream: a window counts as
    speech when ``prob >= activation_threshold``, or -- once speaking -- when
    ``prob > deactivation_threshold``.  Speech starts after ``min_speech_duration`` of
    consecutive speech windows and ends after ``min_silence_duration`` of non-speech.
    """

    def __init__(self, params: SegmenterParams | None = None) -> None:
        self.params = params or SegmenterParams()
        p = self.params
        if not 0.0 < p.activation_threshold <= 1.0:
            raise ValueError("activation_threshold must be in (0, 1]")
        if min(p.min_speech_duration, p.min_silence_duration, p.prefix_padding_duration) < 0:
            raise ValueError("durations must be >= 0")
        if p.max_buffered_speech <= 0 or p.sample_rate <= 0:
            raise ValueError("max_buffered_speech and sample_rate must be > 0")
        rate = p.sample_rate
        self._min_speech = self.params.min_speech_duration * rate
        self._min_silence = self.params.min_silence_duration * rate
        self._prefix = int(round(self.params.prefix_padding_duration * rate))
        self._max_speech = int(round(self.params.max_buffered_speech * rate))
        self.speaking = False
        self.last_prob = 0.0
        self._t = 0.0
        self._reset_segment()
        self._pre: collections.deque[np.ndarray] = collections.deque()
        self._pre_samples = 0

    def _reset_segment(self) -> None:
        self._run_samples = 0  # consecutive speech samples (onset run while silent)
        self._run_start = 0.0
        self._silence_samples = 0
        self._speech_end = 0.0
        self._onset = 0.0
        self._speech: list[np.ndarray] = []
        self._speech_samples = 0
        self._truncated = False
        self._peak_energy = 0.0  # the utterance's loudest window (mean square)
        self._loud_end = 0.0  # end of its last window within LOUD_RANGE of that peak

    @property
    def silence_duration(self) -> float:
        """Seconds of silence since the caller's last speech window (0 when not speaking)."""
        return self._silence_samples / self.params.sample_rate if self.speaking else 0.0

    @property
    def pause_duration(self) -> float:
        """Seconds the caller has been quiet, for deciding *early* whether they have finished (the end-of-turn
        model, the early transcript): Silero's silence, or -- once Silero has heard one window of silence -- the
        time since the audio last came within :data:`LOUD_RANGE` of the utterance's loudest window, whichever is
        longer. Silero's probability trails the end of a word by 100-250 ms on phone audio; the energy does not.
        On a noisy line the noise stays within range and this is Silero's silence. 0 while speech goes on."""
        if not self.speaking or self._silence_samples == 0:
            return 0.0
        return max(self._silence_samples / self.params.sample_rate, self._t - self._loud_end)

    @property
    def voice_end(self) -> float:
        """End of the current utterance's last speech window (meaningful while ``speaking``)."""
        return self._speech_end

    def snapshot(self) -> np.ndarray:
        """The current utterance's audio so far (for transcribing before the end of speech is confirmed)."""
        if not self._speech:
            return np.zeros(0, np.float32)
        return np.concatenate(self._speech).astype(np.float32, copy=False)

    def reset(self) -> None:
        """Forget everything (e.g. after barge-in handling or a stream restart)."""
        self.speaking = False
        self.last_prob = 0.0
        self._reset_segment()
        self._pre.clear()
        self._pre_samples = 0

    def push(self, prob: float, window: np.ndarray, end_time: float) -> list[SegmentEvent]:
        """Feed one VAD window (as delivered by ``VadStream``'s ``on_window``)."""
        p = self.params
        if not self.speaking and prob < p.activation_threshold:
            self.push_quiet(prob, window, end_time)
            return []
        self.last_prob = prob
        self._t = end_time
        n = int(window.shape[0])
        start_time = end_time - n / p.sample_rate
        is_speech = prob >= p.activation_threshold or (
            self.speaking and prob > p.deactivation_threshold
        )
        events: list[SegmentEvent] = []

        if not self.speaking:  # (and the window is speech: the quiet ones went to push_quiet)
            self._pre.append(window)
            self._pre_samples += n
            if self._run_samples == 0:
                self._run_start = start_time
            self._run_samples += n
            if self._run_samples >= self._min_speech:
                self._start_speech(events)
            self._trim_prefix()
            return events

        # speaking
        self._append_speech(window, end_time, events)
        self._track_loudness(window, end_time)
        if is_speech:
            self._silence_samples = 0
            self._speech_end = end_time
        else:
            self._silence_samples += n
            if self._silence_samples >= self._min_silence:
                self._end_speech(events)
        return events

    def push_quiet(self, prob: float, window: np.ndarray, end_time: float) -> None:
        """A window below ``activation_threshold`` while not :attr:`speaking` (the caller's to check; :meth:`push`
        comes here for such windows too): it can start nothing, so it only joins the prefix padding and ends any
        onset run. No events; the quiet most of a call is made of, without :meth:`push`'s list."""
        self.last_prob = prob
        self._t = end_time
        self._pre.append(window)
        self._pre_samples += int(window.shape[0])
        self._run_samples = 0
        self._trim_prefix()

    def end_now(self) -> list[SegmentEvent]:
        """End the current utterance at once, inside its closing silence (an end-of-turn model is sure the caller
        has finished): the same :class:`SpeechEnded` the full ``min_silence_duration`` would have given."""
        if not self.speaking or self._silence_samples == 0:
            return []
        events: list[SegmentEvent] = []
        self._end_speech(events)
        return events

    # -- internals -----------------------------------------------------------------
    def _trim_prefix(self) -> None:
        """Keep the onset run plus ``prefix_padding`` of audio before it."""
        keep = self._prefix + self._run_samples
        while self._pre and self._pre_samples - self._pre[0].shape[0] >= keep:
            self._pre_samples -= self._pre.popleft().shape[0]

    def _start_speech(self, events: list[SegmentEvent]) -> None:
        keep = self._prefix + self._run_samples
        audio = np.concatenate(self._pre) if self._pre else np.zeros(0, np.float32)
        audio = audio[-keep:] if keep > 0 else audio[:0]
        self._pre.clear()
        self._pre_samples = 0
        self.speaking = True
        self._onset = self._run_start
        self._speech_end = self._run_start + self._run_samples / self.params.sample_rate
        self._silence_samples = 0
        self._speech = []
        self._speech_samples = 0
        self._truncated = False
        events.append(SpeechStarted(self._onset))
        self._append_speech(audio, self._speech_end, events)
        self._track_loudness(audio[-self._run_samples:] if self._run_samples else audio, self._speech_end)

    def _track_loudness(self, window: np.ndarray, end_time: float) -> None:
        if not window.size:
            return
        energy = float(np.dot(window, window)) / window.size
        if energy > self._peak_energy:
            self._peak_energy = energy
        if energy >= self._peak_energy * LOUD_RANGE:
            self._loud_end = end_time

    def _append_speech(self, audio: np.ndarray, end_time: float, events: list[SegmentEvent]) -> None:
        if self._truncated:
            return
        room = self._max_speech - self._speech_samples
        if audio.shape[0] >= room:
            if room > 0:
                self._speech.append(np.asarray(audio[:room], dtype=np.float32))
                self._speech_samples += room
            self._truncated = True
            events.append(SpeechTruncated(end_time))
            return
        self._speech.append(np.asarray(audio, dtype=np.float32))
        self._speech_samples += audio.shape[0]

    def _end_speech(self, events: list[SegmentEvent]) -> None:
        audio = (
            np.concatenate(self._speech).astype(np.float32, copy=False)
            if self._speech
            else np.zeros(0, np.float32)
        )
        events.append(
            SpeechEnded(
                t=self._speech_end,
                audio=audio,
                duration=max(self._speech_end - self._onset, 0.0),
                truncated=self._truncated,
            )
        )
        self.speaking = False
        truncated = self._truncated
        self._reset_segment()
        if self._prefix > 0 and not truncated and audio.size:
            # The closing silence is the freshest audio: it seeds the next utterance's
            # prefix padding, so a quick follow-up sentence still gets its lead-in.
            tail = audio[-self._prefix :]
            self._pre.append(tail)
            self._pre_samples = int(tail.shape[0])
