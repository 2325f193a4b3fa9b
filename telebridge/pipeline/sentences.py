"""Cut streamed LLM text into speakable chunks, so speech synthesis can start before the reply is complete.

Theory of operation
-------------------
Text is pushed as it streams; a chunk is released only once its end is *confirmed* by text that follows it,
which is what keeps "3.50", "10:30", "example.com" and "e.g. this" whole:

* A sentence ends after a run of ``. ! ? …`` (plus closing quotes/brackets) that is followed by whitespace and
  then a visible character -- or by a newline. A ``.`` does not end a sentence after a title or abbreviation
  (Mr. Dr. St. e.g. i.e. vs. …), after an initial ("J."), after a list number at the start of a chunk ("2."),
  or when the next word starts in lower case. Abbreviations that often close a sentence (etc. a.m. Inc. U.S.)
  end one only when the next word is capitalised.
* Every newline ends a chunk (LLMs put list items and paragraphs on their own lines).
* The first chunk of a reply may end early, at ``, ; :`` followed by whitespace, once it has ``first_min_words``
  words: the caller hears the agent start sooner, and later chunks are long enough to sound natural.
* With ``phrase_cuts`` (for whole-sentence TTS engines such as Piper, whose first audio waits for the whole
  chunk), a first chunk with no clause mark may also end before a word that starts a phrase ("and", "from",
  "with", "because" … :data:`PHRASE_STARTS`), once it has ``first_min_words`` words and the phrase has at least
  ``PHRASE_TAIL_WORDS`` words before the sentence or clause ends ("We're open Monday to Friday, | from 8 a.m. to
  6 p.m."; never "I'd be happy to book that | for you."). Such a chunk gets a comma: the voice then ends it with a
  continuing intonation and a short pause, as a speaker would, instead of a falling, final one -- and the text
  (kept in the conversation) says what the caller hears.
* A chunk with no boundary at all is cut at the first whitespace past ``max_chars``.

Cuts only ever fall on whitespace, and each decision looks at the buffered text alone, so the chunks do not
depend on how the stream was split into deltas. Markdown noise (``*``, ``#``, backticks) is dropped as it
arrives, since a TTS voice would read it aloud or stumble over it.
"""

from __future__ import annotations

_TERMINATORS = frozenset(".!?…")
_CLOSERS = frozenset("\"')]}”’»")
_CLAUSE_MARKS = frozenset(",;:")
_MARKDOWN = str.maketrans("", "", "*#`")
# Words a first chunk may be cut before (phrase_cuts): conjunctions and prepositions that start a phrase of their
# own. Not "to", "of", "for", "in", "on", "at", "up": they bind to the word before ("happy to", "a lot of", "wait
# for", "log in", "look at"), so a cut before them splits a phrase.
PHRASE_STARTS = frozenset(
    "and but or so because from with until after before between which who whose where when while since if "
    "unless although though whereas during".split()
)
PHRASE_TAIL_WORDS = 4
"""Words the phrase must have (its first word included) before its sentence or clause ends, for a phrase cut."""

# Never end a sentence: they almost always precede a name, a number or an example.
_NEVER_ENDS = frozenset(
    "mr mrs ms mx dr prof rev hon sr jr st mt ft vs cf fig approx dept e.g i.e eg ie viz al".split()
)
# End a sentence only when the next word is capitalised.
_MAYBE_ENDS = frozenset(
    "etc inc ltd co corp llc jan feb mar apr jun jul aug sep sept oct nov dec ave blvd rd a.m p.m".split()
)


class SentenceChunker:
    """Incremental splitter: ``push()`` streamed text, get finished chunks; ``flush()`` at the end of a reply."""

    def __init__(self, *, first_min_words: int = 4, max_chars: int = 200, phrase_cuts: bool = False) -> None:
        self.first_min_words = first_min_words
        self.max_chars = max_chars
        self.phrase_cuts = phrase_cuts
        self._buffer = ""
        self._first = True
        self._phrase_cut = False  # the cut _find_cut found is a phrase cut

    def push(self, text: str) -> list[str]:
        """Add streamed text; return the chunks whose end is now known."""
        # Leading whitespace is dropped as it arrives (as after every cut), so the positions ``max_chars`` counts
        # do not depend on whether the whitespace after a cut came in the same delta or the next one.
        self._buffer = (self._buffer + text.translate(_MARKDOWN)).lstrip()
        chunks: list[str] = []
        while (cut := self._find_cut()) is not None:
            chunk, self._buffer = self._buffer[:cut], self._buffer[cut:].lstrip()
            if self._phrase_cut:
                chunk = chunk.rstrip() + ","
            self._release(chunk, chunks)
        return chunks

    def flush(self) -> list[str]:
        """The reply is complete: return what is left and get ready for the next reply."""
        chunks: list[str] = []
        self._release(self._buffer, chunks)
        self._buffer = ""
        self._first = True
        return chunks

    def _release(self, raw: str, into: list[str]) -> None:
        chunk = " ".join(raw.split())
        if chunk:
            into.append(chunk)
            self._first = False

    def _find_cut(self) -> int | None:
        """Index to cut the buffer at, or ``None`` until more text arrives."""
        text = self._buffer
        size = len(text)
        self._phrase_cut = False
        i = 0
        while i < size:
            char = text[i]
            if char == "\n":
                return i + 1
            if char.isspace() and i >= self.max_chars:
                return i
            if char in _TERMINATORS:
                end = i + 1
                while end < size and (text[end] in _TERMINATORS or text[end] in _CLOSERS):
                    end += 1
                if end == size:
                    return None  # the next character decides
                if text[end].isspace():
                    following = end
                    while following < size and text[following].isspace() and text[following] != "\n":
                        following += 1
                    if following == size:
                        return None
                    next_char = "" if text[following] == "\n" else text[following]
                    if self._ends_sentence(text, i, end, next_char):
                        return end
                i = end
                continue
            if (
                self._first
                and char in _CLAUSE_MARKS
                and i + 1 < size
                and text[i + 1].isspace()
                and len(text[:i].split()) >= self.first_min_words
            ):
                return i + 1
            if self._first and self.phrase_cuts and char.isspace() and i and text[i - 1].isalnum():
                verdict = self._phrase_starts_after(text, i)
                if verdict is None:
                    return None
                if verdict:
                    self._phrase_cut = True
                    return i
            i += 1
        return None

    def _phrase_starts_after(self, text: str, i: int) -> bool | None:
        """May the first chunk end at the whitespace ``text[i]``, before a phrase? ``None``: more text decides."""
        size = len(text)
        if len(text[:i].split()) < self.first_min_words:
            return False
        words = 0
        position = i
        while words < PHRASE_TAIL_WORDS:
            while position < size and text[position].isspace():
                if text[position] == "\n":
                    return False  # the line ends first (and is a chunk of its own)
                position += 1
            start = position
            while position < size and not text[position].isspace():
                position += 1
            if position == size:
                return None  # the word may go on
            word = text[start:position]
            if not words and word.lower() not in PHRASE_STARTS:
                return False
            bare = word.rstrip("".join(_CLOSERS))
            if bare[-1:] in _CLAUSE_MARKS:
                return False
            if bare[-1:] in _TERMINATORS:
                run = start + len(bare)
                while run > start and text[run - 1] in _TERMINATORS:
                    run -= 1
                following = position
                while following < size and text[following].isspace() and text[following] != "\n":
                    following += 1
                if following == size:
                    return None
                next_char = "" if text[following] == "\n" else text[following]
                if self._ends_sentence(text, run, position, next_char):
                    return False
            words += 1
        return True

    def _ends_sentence(self, text: str, start: int, end: int, next_char: str) -> bool:
        """Does the terminator run ``text[start:end]``, followed by ``next_char`` ("" = newline), end a sentence?"""
        run = text[start:end]
        if run.rstrip("".join(_CLOSERS)) != ".":
            return True  # ! ? … and runs like "?!" or "..."
        if not next_char:
            return True
        word_start = start
        while word_start > 0 and not text[word_start - 1].isspace():
            word_start -= 1
        word = text[word_start:start].lstrip("\"'([{“‘«")
        lowered = word.lower()
        if lowered in _NEVER_ENDS:
            return False
        if len(word) == 1 and word.isalpha() and word.isupper():
            return False  # an initial, as in "J. R. R. Tolkien"
        if word.isdigit() and not text[:word_start].strip():
            return False  # a numbered list item at the start of a chunk
        if lowered in _MAYBE_ENDS or "." in word:
            return next_char.isupper()
        return not next_char.islower()


__all__ = ["SentenceChunker"]
