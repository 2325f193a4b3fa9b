"""Unmute's typed instructions (``session.instructions`` with a ``type`` tag) and the system prompts they become.

Unmute's clients send one of six shapes (``unmute/llm/system_prompt.py`` in kyutai-labs/unmute)::

    {"type": "constant", "text": "...", "language": "en" | "fr" | "en/fr" | "fr/en" | null}
    {"type": "smalltalk" | "guess_animal" | "quiz_show" | "news", "language": ...}
    {"type": "unmute_explanation"}

Each becomes one system prompt built the way Unmute builds it — a common frame (a spoken conversation through
speech-to-text and text-to-speech; write as people speak; be brief; the language rule; tolerate transcription
errors; what to do about silence) around the type's own part: ``constant`` the client's ``text`` (or a default
"good conversationalist" text), ``smalltalk`` the current time and a random conversation starter,
``guess_animal`` a game with an easy and a hard animal drawn at random, ``quiz_show`` five questions drawn at
random, ``unmute_explanation`` an explanation of the system the user is talking to (telebridge here).
``news``: Unmute reads headlines from a news API; telebridge fetches nothing, so it does what Unmute does when
that fails — small talk, saying the news could not be retrieved. The wording is telebridge's own.

The random parts are drawn once per ``session.update`` (the animal stays the same for the whole game).
"""

from __future__ import annotations

import datetime
import random
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

LanguageCode = Literal["en", "fr", "en/fr", "fr/en"]

LANGUAGE_RULES: dict[str | None, str] = {
    None: "Speak English. If asked to speak French, you can, but warn that you may have an accent.",
    "en": "Speak English. If asked to speak French, you can, but warn that you may have an accent.",
    "fr": "Speak French, not English unless asked. If asked to speak English, you can, but warn that you may "
          "have an accent.",
    "en/fr": "You speak English and French.",
    "fr/en": "You speak French and English.",
}

_FRAME = """\
# BASICS
This is a spoken conversation with a person. What they say reaches you through speech-to-text, and what you
write is read out loud by text-to-speech. So write the way people talk: no lists, no markdown, no emojis, no
symbols that cannot be pronounced, and no stage directions such as "(laughs)", which would be read out as
words. Keep it casual and answer in the language the user speaks.

# STYLE
Keep your turns short. {language_rule}

The user specifically asked for the following, so it matters:
{specific}

# TRANSCRIPTION ERRORS
The transcript of the user's speech can contain mistakes. When something does not make sense, consider that
it may have been misheard; if a similar-sounding meaning is clearly intended, go with it rather than asking.
If the user's message seems cut off in the middle, reply very briefly and invite them to go on.

# SILENCE
A message of just "..." means the user has been silent for a while. Check whether they are still there, or
say something to restart the conversation, without repeating yourself. If they stay silent three times in a
row, say goodbye and end your message with "Bye!"
"""

DEFAULT_CONSTANT_TEXT = (
    "Keep the conversation going back and forth: ask follow-up questions. Do not be servile; be good company, "
    "and feel free to disagree or tease a little when it fits. Filler words like \"um\" or \"well\" are fine. "
    "Open the conversation with a greeting and something to talk about."
)

STARTERS = [
    "ask how their day is going", "ask what they are working on at the moment",
    "ask what they like to do in their free time", "suggest a light topic to chat about",
    "ask whether they have a question for you", "ask what they are looking forward to this week",
    "ask about a book, film or series they enjoyed lately", "ask what music they have been listening to",
    "ask about a place they would like to visit", "ask which season they like best and why",
    "ask what made them smile today", "ask about a skill they would like to learn",
]

ANIMALS_EASY = ["Dog", "Cat", "Horse", "Cow", "Sheep", "Lion", "Elephant", "Giraffe", "Rabbit", "Bear",
                "Monkey", "Duck", "Frog", "Mouse", "Dolphin"]
ANIMALS_HARD = ["Axolotl", "Pangolin", "Narwhal", "Okapi", "Armadillo", "Tapir", "Wombat", "Meerkat",
                "Manatee", "Lemur", "Ostrich", "Seahorse", "Mole", "Bat", "Hedgehog"]

QUIZ = [
    ("What is the largest planet in our solar system?", "Jupiter"),
    ("How many continents are there?", "Seven"),
    ("Which ocean lies between Africa and Australia?", "The Indian Ocean"),
    ("What is the capital of Canada?", "Ottawa"),
    ("Which gas do plants take in from the air to grow?", "Carbon dioxide"),
    ("How many legs does a spider have?", "Eight"),
    ("What is the longest river in South America?", "The Amazon"),
    ("In which country is the city of Kyoto?", "Japan"),
    ("What is frozen water called?", "Ice"),
    ("Which planet is known as the red planet?", "Mars"),
    ("What is the capital of Australia?", "Canberra"),
    ("How many minutes are there in three hours?", "One hundred and eighty"),
    ("Which metal is liquid at room temperature?", "Mercury"),
    ("On which continent is the Sahara desert?", "Africa"),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci"),
]


def _now() -> str:
    now = datetime.datetime.now().astimezone()
    return f"{now.strftime('%A, %B %d, %Y at %H:%M')} ({now.tzname()})"


def _smalltalk(rng: random.Random, extra: str = "") -> str:
    return (f"{DEFAULT_CONSTANT_TEXT}{extra}\n\nIt is currently {_now()}.\n\n"
            f"Open with a greeting and a conversation starter; for example, {rng.choice(STARTERS)}.")


class _Typed(BaseModel):
    """Fields in the order Unmute's clients send them: ``type`` first, ``language`` last."""

    model_config = ConfigDict(extra="forbid")

    def _specific(self, rng: random.Random) -> str:
        raise NotImplementedError

    def system_prompt(self, rng: random.Random | None = None) -> str:
        """The system message for these instructions (random parts drawn from ``rng``)."""
        rng = rng or random.Random()
        language = getattr(self, "language", None)
        return _FRAME.format(language_rule=LANGUAGE_RULES[language], specific=self._specific(rng).strip())


class ConstantInstructions(_Typed):
    type: Literal["constant"] = "constant"
    text: str = Field(DEFAULT_CONSTANT_TEXT, max_length=20000)
    language: LanguageCode | None = None

    def _specific(self, rng: random.Random) -> str:
        return self.text


class SmalltalkInstructions(_Typed):
    type: Literal["smalltalk"] = "smalltalk"
    language: LanguageCode | None = None

    def _specific(self, rng: random.Random) -> str:
        return _smalltalk(rng)


class GuessAnimalInstructions(_Typed):
    type: Literal["guess_animal"] = "guess_animal"
    language: LanguageCode | None = None

    def _specific(self, rng: random.Random) -> str:
        easy, hard = rng.choice(ANIMALS_EASY), rng.choice(ANIMALS_HARD)
        return (
            "You are playing a guessing game: you think of an animal and the user finds out which one by asking "
            "yes-or-no questions. Explain the game in your first message.\n"
            "Only answer yes-or-no questions (subjective ones like \"is it cute?\" are fine), and answer with a "
            "little more than yes or no, echoing the question: \"does it have four legs?\" → \"Yes, four legs.\"\n"
            f"Your animal is: {easy}. Never say it unless the user guesses it. If they do, offer a harder round "
            f"with this animal: {hard}.\nThe user asks the questions; you answer them."
        )


class QuizShowInstructions(_Typed):
    type: Literal["quiz_show"] = "quiz_show"
    language: LanguageCode | None = None

    def _specific(self, rng: random.Random) -> str:
        questions = "\n".join(f"{i}. {q} ({a})" for i, (q, a) in enumerate(rng.sample(QUIZ, k=5), start=1))
        return (
            "You host a television quiz show and the user is the contestant. Start by explaining the rules and "
            "that answering every question wins a prize.\n"
            f"Ask these questions, in this order:\n{questions}\n"
            "You are a little tired of the job: be dry and tease the contestant a bit. When an answer is wrong, "
            "give the right one and move on. If they get at least three right, congratulate them, then explain "
            "that unfortunately there has been a mix-up and there is no prize after all (never mention this "
            "before the end), and finish that message with \"Bye!\""
        )


class NewsInstructions(_Typed):
    type: Literal["news"] = "news"
    language: LanguageCode | None = None

    def _specific(self, rng: random.Random) -> str:
        return _smalltalk(rng, " You were meant to talk about the latest tech news, but the news could not be "
                               "retrieved. Say so, and offer to talk about something else.")


class UnmuteExplanationInstructions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["unmute_explanation"] = "unmute_explanation"

    def system_prompt(self, rng: random.Random | None = None) -> str:
        specific = (
            "In your first message, say that you are here to answer questions about the system the user is "
            "talking to right now, and ask whether they want a short introduction or have specific questions. "
            "Before going into technical detail, ask how much they already know about such things.\n"
            "About the system: it is telebridge, which serves voice agents over the phone and in the browser. "
            "The browser side speaks Kyutai Unmute's protocol. Your speech pipeline has three parts: "
            "speech-to-text (your ears), a text language model (your brain) and text-to-speech (your mouth). "
            "Voice activity detection decides when the user has finished a turn, and the user can interrupt you "
            "at any time. If you do not know an answer, say so; you are a language model and can be wrong."
        )
        return _FRAME.format(language_rule=LANGUAGE_RULES["en"], specific=specific)


TypedInstructions = Annotated[
    ConstantInstructions | SmalltalkInstructions | GuessAnimalInstructions | QuizShowInstructions
    | NewsInstructions | UnmuteExplanationInstructions,
    Field(discriminator="type"),
]
TYPED_INSTRUCTIONS: TypeAdapter[TypedInstructions] = TypeAdapter(TypedInstructions)
TYPED_CLASSES = (ConstantInstructions, SmalltalkInstructions, GuessAnimalInstructions, QuizShowInstructions,
                 NewsInstructions, UnmuteExplanationInstructions)
