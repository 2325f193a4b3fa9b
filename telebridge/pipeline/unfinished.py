"""Does a caller's transcript so far look like a thought in progress? (Used to wait longer, never to reply sooner.)

Why a module: the end-of-turn model hears intonation, not words, and a caller who stops to think mid-sentence
often *sounds* done ("my date of birth is March … [1.2 s] … fifth"). The words then have the last say: the turn
engine waits up to ``max_endpointing_delay`` whenever :func:`looks_unfinished` says so. Each rule is a phone-speech
fact about how a sentence cannot end, checked against what Whisper actually writes for a caller cut mid-thought
(it drops "um"/"uh", adds a full stop or a question mark, and writes digits: ``bench/latency.py``'s mid-thought
callers):

* a trailing comma, dash, ellipsis or colon;
* a word after which no sentence ends -- an article, a possessive, a conjunction, a filler ("on the?",
  "can you check if?": the question mark is Whisper's guess) -- and, unless the sentence is a question, a
  preposition or a form of "be" ("my number is", "I'd like to"; but "who am I talking to?");
* a filler phrase at the end ("… if, you know?") with such a word before it;
* "and also", "I think", "I want" …: a clause that announces more;
* letters being spelled ("K. Oh, W."): two or more single letters at the end;
* digits being dictated after "number", "account", "phone" … ("my account number is 729. 448."): fewer digits
  than any such number has, or groups still coming in the same size;
* an e-mail address without its "at" part, a date of birth with a month but no day;
* over a turn of several utterances (:func:`turn_looks_unfinished`): one lone word, or two hollow ones, after an
  unfinished start -- Whisper writes a filler said on its own as words ("I'd like." then "2." or "to you." for
  "um").

Pure string work on one short utterance, once per pause; nothing is called per audio frame.
"""

from __future__ import annotations

import functools
import re

from .backchannel import tokens

__all__ = ["looks_unfinished", "turn_looks_unfinished"]

# No sentence ends on these, question or not.
_NEVER_LAST = frozenset(
    """and or but because cause if unless although though whereas than the a an my your our their its every
    um uh er erm umm uhm""".split()
)
# A statement does not end on these; a question may ("what is it for?", "do you know where it is?").
_NOT_LAST_IN_STATEMENT = frozenset(
    """so while to of for from in on at by with without about into onto like as between is are was were""".split()
)
# "I think so.", "I hope so.": "so" closes these.
_SO_CLOSES = frozenset("think hope guess believe suppose said say do did not is".split())
# Filler phrases Whisper keeps (it drops "um" and "uh"): what comes before them is what the caller said.
# ("like" is not one: "I'd like." is the caller stopping before what they would like.)
_FILLER_TAILS = (("you", "know"), ("i", "mean"))
# A clause that announces more: "and also …", "I think …".
_ANNOUNCING = (("and", "also"), ("then", "also"), ("but", "also"), ("as", "well", "as"))
_SUBJECTS = frozenset("i we you".split())
_WANTING = frozenset("think guess mean want need wanted needed believe suppose wonder wondering was".split())
_LETTER_WORDS = frozenset({"oh"})  # how Whisper writes a spelled "O"
# Words that carry nothing on their own: two of them alone after an unfinished start are an "um" or "uh" as
# Whisper writes it ("to you.", "and uh.", "oh, the."), not the end of the thought.
_HOLLOW = frozenset("um uh er erm umm uhm hmm mm ah oh to you the a an and i so".split())

_NUMBER_NOUNS = frozenset(
    """number phone cell mobile account card zip code pin id policy member confirmation order reference
    extension ssn social""".split()
)
_DIGIT_WORDS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine".split())}
_PIECE = re.compile(r"\d+|[a-z]+(?:'[a-z]+)?|[,.;:!?–—-]")
_DIGIT_BY_DIGIT = re.compile(r"\b\d(?:-\d)+\b")
_FULL_NUMBER = 10  # a phone number with its area code: no number being dictated is longer before a pause
_ONE_RUN = 7  # digits read in one go ("72944861"): a whole number, not a first group
_MONTHS = frozenset(
    "january february march april may june july august september october november december".split()
)


def turn_looks_unfinished(parts: list[str]) -> bool:
    """The caller's turn so far, one transcript per utterance: :func:`looks_unfinished` on the whole, or on what
    came before a last utterance that is a filler after an unfinished start, as Whisper writes one: one word ("I'd
    like." + "2." for "um"), or two that carry nothing ("I'd like." + "to you." for "um"; :data:`_HOLLOW`). A real
    ending that short waits a little longer, never is cut off."""
    if looks_unfinished(" ".join(parts)):
        return True
    if len(parts) < 2:
        return False
    last = tokens(parts[-1])
    filler = len(last) == 1 or (len(last) == 2 and all(w in _HOLLOW for w in last))
    return filler and looks_unfinished(" ".join(parts[:-1]))


@functools.lru_cache(maxsize=512)
def looks_unfinished(text: str) -> bool:
    """Does the caller seem to be mid-sentence? See the module docstring for the rules. (Cached: the turn engine
    asks about the same words on every VAD tick while they wait for the end of the turn.)"""
    stripped = text.rstrip()
    if not stripped:
        return False
    if stripped.endswith((",", "-", "–", "—", "...", "…", ":")):
        return True
    words = tokens(stripped)
    if not words:
        return False
    question = stripped.endswith(("?", "!"))
    cut = _without_filler_tail(words)
    if cut is not words:  # the punctuation belongs to the filler: judge the words before it as unpunctuated
        words, question = cut, False
        if not words:
            return False
    return (
        _ends_badly(words, question)
        or any(tuple(words[-len(p):]) == p for p in _ANNOUNCING)
        or (len(words) >= 2 and words[-2] in _SUBJECTS and words[-1] in _WANTING)
        or _spelling(words)
        or _dictating_digits(stripped.lower(), words)
        or _email_without_domain(stripped.lower(), words)
        or _month_without_day(words)
    )


def _without_filler_tail(words: list[str]) -> list[str]:
    for phrase in _FILLER_TAILS:
        if len(words) > len(phrase) and tuple(words[-len(phrase):]) == phrase:
            return words[: -len(phrase)]
    return words


def _ends_badly(words: list[str], question: bool) -> bool:
    last = words[-1]
    if last in _NEVER_LAST:
        return True
    if last == "so" and len(words) >= 2 and words[-2] in _SO_CLOSES:
        return False
    return last in _NOT_LAST_IN_STATEMENT and not question


def _is_letter(word: str) -> bool:
    return (len(word) == 1 and word.isalpha() and word not in ("a", "i")) or word in _LETTER_WORDS


def _spelling(words: list[str]) -> bool:
    """Two or more single letters at the end ("K. Oh, W."): a name being spelled out, one more may come."""
    return len(words) >= 2 and _is_letter(words[-1]) and _is_letter(words[-2])


def _dictating_digits(lowered: str, words: list[str]) -> bool:
    """A number announced ("my account number is …") whose digits stop short: fewer than a phone number's and
    either fewer than 7 or groups still arriving in their size ("729. 448."; "729 448 61" is done)."""
    if not _NUMBER_NOUNS.intersection(words):
        return False
    lowered = _DIGIT_BY_DIGIT.sub(lambda m: m.group().replace("-", ""), lowered)  # "6-1", "1-2-3-4": one group
    groups: list[int] = []  # digit counts of the trailing groups, last first
    run = 0  # digits said as words ("four one five"), one group until punctuation
    for piece in reversed(_PIECE.findall(lowered)):
        if piece in _DIGIT_WORDS:
            run += 1
            continue
        if run:
            groups.append(run)
            run = 0
        if piece.isdigit():
            groups.append(len(piece))  # "729 448", "415-555": each digit string is a group
        elif piece not in ",.;:-–—":
            break
    if run:
        groups.append(run)
    if not groups:
        return False
    total = sum(groups)
    if "zip" in words:
        return total < 5
    if total >= _FULL_NUMBER:
        return False
    if len(groups) == 1:
        return total < _ONE_RUN
    return total < _ONE_RUN or groups[0] >= max(groups[1:])  # the groups have not shrunk: more of that size


def _email_without_domain(lowered: str, words: list[str]) -> bool:
    """ "My email is john.smith." -- an address announced, its "at …" part not said yet."""
    if "email" not in words and "e-mail" not in words:
        return False
    after = lowered[max(lowered.rfind("email"), lowered.rfind("e-mail")):]
    return "@" not in after and " at " not in f" {after} " and not re.search(r"\.(com|net|org|edu)\b", after)


def _month_without_day(words: list[str]) -> bool:
    """ "My date of birth is March." -- a date announced, the month said, the day not yet."""
    return words[-1] in _MONTHS and bool({"birth", "born", "birthday", "dob", "date"}.intersection(words))
