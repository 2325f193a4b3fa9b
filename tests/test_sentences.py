"""SentenceChunker: where streamed LLM text is cut into speakable chunks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telebridge.pipeline.sentences import SentenceChunker


def chunk_all(text: str, sizes: list[int] | None = None, **options: int) -> list[str]:
    """Feed ``text`` in pieces of the given sizes (cycled), or one character at a time."""
    chunker = SentenceChunker(**options)
    out: list[str] = []
    position, step = 0, 0
    while position < len(text):
        size = sizes[step % len(sizes)] if sizes else 1
        out += chunker.push(text[position : position + size])
        position += size
        step += 1
    return out + chunker.flush()


def expected_join(text: str) -> str:
    return " ".join(text.translate(str.maketrans("", "", "*#`")).split())


@pytest.mark.parametrize(
    ("text", "chunks"),
    [
        ("Hello there. How are you? Fine!", ["Hello there.", "How are you?", "Fine!"]),
        ("Mr. Smith and Dr. Jones met at St. Mary's. Then they left.",
         ["Mr. Smith and Dr. Jones met at St. Mary's.", "Then they left."]),
        ("Bring fruit, e.g. apples. Or i.e. pears.", ["Bring fruit, e.g. apples.", "Or i.e. pears."]),
        ("It costs $3.50 today. We open at 10:30 sharp.", ["It costs $3.50 today.", "We open at 10:30 sharp."]),
        ("Visit harbor-dental.example.com/book?day=1. Or email bridget@harbor.example.org. Bye.",
         ["Visit harbor-dental.example.com/book?day=1.", "Or email bridget@harbor.example.org.", "Bye."]),
        ("We open at 9 a.m. Come early.", ["We open at 9 a.m.", "Come early."]),
        ("Apples, pears, etc. and more. Done.", ["Apples, pears, etc. and more.", "Done."]),
        ("Books by J. R. R. Tolkien. Great.", ["Books by J. R. R. Tolkien.", "Great."]),
        ('She said "yes." Then left.', ['She said "yes."', "Then left."]),
        ("Wait... really?! Yes.", ["Wait...", "really?!", "Yes."]),
        ("Well… maybe. Ok.", ["Well…", "maybe.", "Ok."]),
        ("1. Floss daily\n2. Brush twice\n\nThat's it", ["1. Floss daily", "2. Brush twice", "That's it"]),
        ("**Hours:** we are `open` now.\n## Prices\nCheap.", ["Hours: we are open now.", "Prices", "Cheap."]),
        ("Sure. see you", ["Sure. see you"]),  # a lower-case next word is not a new sentence
        ("No. We are closed.", ["No.", "We are closed."]),
    ],
)
def test_examples(text: str, chunks: list[str]) -> None:
    assert chunk_all(text) == chunks
    assert chunk_all(text, [len(text)]) == chunks


def test_first_chunk_may_end_at_a_clause_once_it_has_enough_words() -> None:
    text = "Sure, I can help with that, we have openings on Monday, Tuesday, and Friday this week."
    chunks = chunk_all(text)
    assert chunks[0] == "Sure, I can help with that,"  # "Sure," alone is too short (< 4 words)
    assert chunks[1:] == ["we have openings on Monday, Tuesday, and Friday this week."]  # later chunks: sentences


def test_first_chunk_ends_at_a_clause_of_four_words() -> None:
    text = "We're at 14 Harbor Street, right next to the ferry terminal, with free parking behind the building."
    assert chunk_all(text) == [
        "We're at 14 Harbor Street,", "right next to the ferry terminal, with free parking behind the building."
    ]
    assert chunk_all("Yes, of course, right away.") == ["Yes, of course, right away."]  # 3 words: too short


def test_clause_cut_needs_whitespace_after_the_mark() -> None:
    assert chunk_all("The total for all six items comes to 1,000 dollars at 10:30 today.") == [
        "The total for all six items comes to 1,000 dollars at 10:30 today."
    ]


def test_flush_starts_a_new_reply() -> None:
    chunker = SentenceChunker(first_min_words=2)
    assert chunker.push("Yes, of course, right away.") == ["Yes, of course,"]
    assert chunker.flush() == ["right away."]
    assert chunker.push("Okay then, fine, sure. ") == ["Okay then,"]  # the next reply's first chunk is early again


def test_long_text_without_punctuation_is_cut_at_a_word_past_max_chars() -> None:
    text = " ".join(f"word{i}" for i in range(120))
    chunks = chunk_all(text, max_chars=80)
    assert len(chunks) > 3
    assert all(len(chunk) >= 80 for chunk in chunks[:-1])
    assert all(len(chunk) < 80 + len("word119") + 1 for chunk in chunks)
    assert " ".join(chunks) == text


def test_chunks_are_released_as_soon_as_their_end_is_confirmed() -> None:
    chunker = SentenceChunker()
    assert chunker.push("It is ready.") == []  # could still be "ready.com" or an abbreviation
    assert chunker.push(" ") == []
    assert chunker.push("S") == ["It is ready."]
    assert chunker.push("ee you.\n") == ["See you."]  # a newline confirms at once


def test_markdown_only_text_yields_nothing() -> None:
    assert chunk_all("***\n### \n``") == []


TOKENS = [
    "Mr.", "Dr.", "St.", "e.g.", "i.e.", "etc.", "a.m.", "U.S.", "3.50", "10:30", "1,000", "example.com",
    "me@mail.example.org", "https://x.example/a?b=c.", "word", "Word", "hello,", "yes;", "note:", "end.", "End.",
    "why?", "wow!", "wait...", "so…", "**bold**", "#tag", "`code`", '"quoted."', "(aside).", "J.", "2.", "ok?!",
]


def test_whitespace_after_a_cut_counts_the_same_whichever_delta_brings_it() -> None:
    text = "hello,  Mr. (aside).  yes;  Mr. "  # found by the property below: "yes;" cut early character by character
    options = {"first_min_words": 1, "max_chars": 20}
    assert chunk_all(text, **options) == chunk_all(text, [len(text)], **options) == ["hello,", "Mr. (aside). yes; Mr."]


@settings(max_examples=150, deadline=None)
@given(
    words=st.lists(st.sampled_from(TOKENS), min_size=0, max_size=40),
    separators=st.lists(st.sampled_from([" ", " ", " ", "  ", "\n", " \n\n", "\t"]), min_size=1, max_size=40),
    sizes=st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=10),
    first_min_words=st.integers(min_value=1, max_value=8),
    max_chars=st.integers(min_value=20, max_value=200),
)
def test_chunks_cover_the_text_and_do_not_depend_on_stream_splits(
    words: list[str], separators: list[str], sizes: list[int], first_min_words: int, max_chars: int
) -> None:
    text = "".join(word + separators[i % len(separators)] for i, word in enumerate(words))
    options = {"first_min_words": first_min_words, "max_chars": max_chars}
    whole = chunk_all(text, [max(len(text), 1)], **options)
    assert " ".join(whole) == expected_join(text)
    assert all(chunk and chunk == chunk.strip() and not set(chunk) & set("*#`") for chunk in whole)
    assert chunk_all(text, **options) == whole  # character by character
    assert chunk_all(text, sizes, **options) == whole  # random splits
