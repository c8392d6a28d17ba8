"""Held-out speech for evaluations: sentences no training set here uses, spoken questions with
the words a right answer contains, and the two voices they are heard in — espeak-ng (a voice
no model here was trained on) and the embedded Piper voice."""

from __future__ import annotations

import numpy as np

from omniloom.media.audio_out import OUTPUT_RATE, resample
from omniloom.speech import espeak
from omniloom.speech.tts import Synthesizer

HELD_OUT_SENTENCES = (
    "The library opens at nine in the morning and closes at six.",
    "Please send me the report before the end of the week.",
    "My brother plays the guitar in a small band.",
    "We walked along the river until the sun went down.",
    "The children were excited about the trip to the museum.",
    "Could you tell me how to get to the train station?",
    "She bought fresh bread and a bottle of milk.",
    "The meeting has been moved to Thursday afternoon.",
    "Turn left at the second traffic light and park behind the bank.",
    "Our neighbours painted their fence a bright shade of green.",
    "It rained all night, so the garden looks fresh this morning.",
    "He forgot his keys on the kitchen table again.",
)
SPOKEN_QUESTIONS = (  # (question, any of these words in the answer makes it right)
    ("What is the capital of France?", ("paris",)),
    ("What color is the sky on a clear day?", ("blue",)),
    ("How many days are there in a week?", ("seven", "7")),
    ("What is the largest planet in our solar system?", ("jupiter",)),
    ("What do bees make?", ("honey",)),
    ("What is the opposite of hot?", ("cold",)),
)
VOICES = ("espeak", "piper")


def spoken(text: str, voice: str, synthesizer: Synthesizer | None = None) -> np.ndarray:
    """``text`` in ``voice``, as 24 kHz float32."""
    if voice == "espeak":
        samples, rate = espeak.speak(text)
        return resample(samples, rate, OUTPUT_RATE)
    if synthesizer is None:
        raise ValueError("the piper voice needs a synthesizer")
    return np.concatenate(list(synthesizer.speak(text)))


def answered(answer: str, accepted: tuple[str, ...]) -> bool:
    words = answer.lower()
    return any(word in words for word in accepted)
