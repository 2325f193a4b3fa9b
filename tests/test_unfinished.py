"""Words that look like a thought in progress (telebridge/pipeline/unfinished.py), on what Whisper writes for
callers cut mid-thought -- the transcripts bench/latency.py's mid-thought callers produced -- and on complete
turns that must stay quick."""

from __future__ import annotations

import pytest

from telebridge.pipeline.unfinished import looks_unfinished, turn_looks_unfinished

# What the server heard at the pause of a caller who then went on (bench/latency.py, tiny.en, both windows).
MID_THOUGHT = [
    "I'd like to.",
    "I'd like.",  # "I'd like [1.0 s] to, um, book": the model heard a finished sentence (0.93)
    "Could I come in on the?",  # "on the, um, fourteenth": the question mark is Whisper's guess
    "Can you check if?",
    "Can you check if you know?",  # "if, you know, my insurance …"
    "I need a cleaning then also.",  # "and also, um, I have a question …"
    "I think.",  # "I think, um, Tuesday …"
    "My count number 729.",  # "account number is seven two nine, four four eight, six one"
    "My count number is 729. 448.",
    "My count number 729. 4.48.",
    "The best number to reach me is up 212 555",
    "My number is four one five",
    "My last name is spelled K. Oh, W.",
    "My email is John.Smith.",  # "… at gmail dot com"
    "My e-mail is John.Smith.",
    "My date of birth is March.",  # "… fifth, nineteen eighty two"
    "My number is",
    "Tuesday and...",
    "so,",
    "Is it Monday or?",
]

COMPLETE = [
    "What are your opening hours?",
    "Where are you located?",
    "How much does a checkup cost?",
    "I would like to book an appointment.",
    "Do you take dental insurance?",
    "Can I talk to a real person please?",
    "Are you open on Saturday?",
    "I have a terrible toothache.",
    "Who am I talking to?",  # a preposition may end a question
    "What is this?",
    "I want to talk to her.",
    "I think so.",
    "Thank you.",
    "I'd like plan B.",  # one letter is not spelling
    "My number is 415-555-1234.",
    "My number is four one five, five five five, one two three four.",
    "My count number 729. 4.48. 6-1",  # the groups shrank: the number is done
    "My account number is 72944861.",  # read in one go
    "Call me at 555 1234.",
    "My zip code is 94110.",
    "My e-mail is John.Smith. at gmail.com.",
    "My date of birth is March. That's 1982.",
    "What's my balance, you know?",
    "",
]


@pytest.mark.parametrize("text", MID_THOUGHT)
def test_a_thought_in_progress_looks_unfinished(text):
    assert looks_unfinished(text)


@pytest.mark.parametrize("text", COMPLETE)
def test_a_complete_turn_does_not(text):
    assert not looks_unfinished(text)


@pytest.mark.parametrize(("parts", "unfinished"), [
    (["I'd like.", "2."], True),  # "I'd like to, um, book": the "um" alone written as a word
    (["I'd like.", "to you."], True),  # ... or as two that carry nothing (bench/latency.py, a caller cut off)
    (["I'd like.", "a refund."], False),  # a real ending of two words: judged on the whole turn
    (["Could I come in on the?", "Um."], True),
    (["I'd like.", "A table for two."], False),  # the caller went on: judged on the whole turn
    (["I'd like to book.", "Tomorrow."], False),  # a finished start: a one-word addition is an answer
    (["Yes.", "Okay."], False),
    (["My number is 415.", "555."], True),  # the whole turn's own rules still apply
])
def test_a_turn_of_several_utterances(parts, unfinished):
    assert turn_looks_unfinished(parts) is unfinished
