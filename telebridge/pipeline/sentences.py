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

    def __init__(self, *, first_min_words: int = 4, max_chars: int = 200) -> None:
        self.first_min_words = first_min_words
        self.max_chars = max_chars
        self._buffer = ""
        self._first = True

    def push(self, text: str) -> list[str]:
        """Add streamed text; return the chunks whose end is now known."""
        # Leading whitespace is dropped as it arrives (as after every cut), so the positions ``max_chars`` counts
        # do not depend on whether the whitespace after a cut came in the same delta or the next one.
        self._buffer = (self._buffer + text.translate(_MARKDOWN)).lstrip()
        chunks: list[str] = []
        while (cut := self._find_cut()) is not None:
            chunk, self._buffer = self._buffer[:cut], self._buffer[cut:].lstrip()
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
            i += 1
        return None

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
