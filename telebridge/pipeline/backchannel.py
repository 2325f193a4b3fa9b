"""What a caller's words mean for turn-taking: real words or backchannels (an unfinished thought: :mod:`.unfinished`).

Why a module: the turn engine decides on *counts* ("the caller said 2 real words"), but what counts is a matter
of phone-speech facts that change independently of the state machine:

* Speech recognisers write non-speech as annotations ("[coughs]", "(laughing)", "*sigh*", "♪") and filled pauses
  as words ("um", "uh", "hmm", "ha ha"). None of those is a word the caller meant.
* A backchannel ("uh-huh", "yeah", "okay", "right") tells the agent to go on. An utterance made *only* of
  backchannel phrases never interrupts; mixed with real words ("okay, but wait") every word counts.

Everything here is pure string work on short utterances; nothing is called per audio frame.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["WordJudge", "tokens", "FILLERS"]

_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|♪[^♪]*♪?|<[^>]*>")
_TOKEN = re.compile(r"[a-z0-9]+(?:['’-][a-z0-9]+)*")

# Filled pauses, hesitations and laughter: never words, wherever they appear.
FILLERS = frozenset(
    "uh um umm uhm er erm ah ahh aah oh ooh hmm hm mm mmm mhm huh eh ha haha hah heh hehe".split()
)


def tokens(text: str) -> list[str]:
    """Lower-case words of a transcript, with recogniser annotations ("[coughs]", "(laughs)") removed."""
    cleaned = _ANNOTATION.sub(" ", text.lower())
    return [t.replace("’", "'") for t in _TOKEN.findall(cleaned)]


class WordJudge:
    """Counts the words of an utterance that should count towards interrupting the agent."""

    def __init__(self, backchannels: Iterable[str]) -> None:
        phrases = {tuple(tokens(b)) for b in backchannels}
        self._phrases = sorted((p for p in phrases if p), key=len, reverse=True)

    def lexical(self, text: str) -> list[str]:
        """The words that are not fillers, laughter or vowelless sounds."""
        return [t for t in tokens(text) if t not in FILLERS and not _is_laugh(t) and not _is_sound(t)]

    def is_backchannel(self, text: str) -> bool:
        """True when the utterance has no words but backchannel phrases and fillers (e.g. "Mm-hmm, yeah.")."""
        words = self.lexical(text)
        i = 0
        while i < len(words):
            for phrase in self._phrases:
                if tuple(words[i : i + len(phrase)]) == phrase:
                    i += len(phrase)
                    break
            else:
                return False
        return True

    def acknowledges(self, text: str) -> bool:
        """A backchannel proper: some "uh-huh"/"yeah"/hum, and nothing but backchannels, sounds and fillers."""
        heard = [t for t in tokens(text) if t not in FILLERS and not _is_laugh(t)]
        return bool(heard) and self.is_backchannel(text)

    def count(self, text: str) -> int:
        """Words that can interrupt: 0 for silence, fillers, annotations and pure backchannels."""
        if self.is_backchannel(text):
            return 0
        return len(self.lexical(text))


_VOWELS = frozenset("aeiouy")


def _is_sound(token: str) -> bool:
    """Letters but no vowel: a hum or a noise the recogniser spelled out ("mf", "hmm", "mm-hm", "shh", "pff").

    Interim transcripts of half a hum come out as such tokens; counted as words they would cut the agent off.
    """
    return token.isascii() and not any(c.isdigit() for c in token) and not (_VOWELS & set(token))


def _is_laugh(token: str) -> bool:
    return len(token) >= 4 and set(token) <= {"h", "a", "e", "-"} and token.startswith("h")
