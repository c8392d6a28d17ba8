"""The embedded model's audio projector: speech the project synthesises, transcription first,
then spoken questions; and the evaluation that says whether the native path beats the cascade.

Training speech: everyday sentences the LLM itself writes on many topics, and sentences from a
small grammar (never the evaluation's held-out sentences), spoken by Piper's "joe" at three
speeds and by espeak-ng's en-gb, Scottish and Caribbean voices. espeak-ng's default en-us voice is held out, as are the sentences and questions of
``eval/speech.py``. The Whisper encoder is frozen, so each clip's encoder positions are
computed once; the steps train the stacking projector and the ``<|audio_start|>``/``<|audio_end|>``
embeddings with the LLM frozen (its vision LoRA on, as the server runs it for media prompts).
Only answer tokens carry loss. Task ``transcribe``: "Transcribe the audio." → the sentence.
Task ``answer``: a spoken question → what the LLM itself answers to the same question in text
(so the native path learns to hear, not to know something new).
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from omniloom import kernels
from omniloom.config import EngineSettings
from omniloom.engine.engine import Engine, Job
from omniloom.engine.sampling import SamplingParams
from omniloom.engine.sequence import Delta, Done, Failed
from omniloom.eval import speech as held_out
from omniloom.eval.wer import word_error_rate
from omniloom.media.audio import DecodedAudio
from omniloom.media.audio_out import OUTPUT_RATE, resample
from omniloom.models.audio_branch import (
    AudioBranch,
    build_audio_branch,
    embedded_asr_path,
    write_audio_adapter,
)
from omniloom.models.multimodal import splice_media
from omniloom.models.specs.base import LoadedModel, SpecContext
from omniloom.models.specs.omniloom_smol import audio_processor
from omniloom.models.specs.omniloom_smol import load as load_default
from omniloom.processing.prompt import MediaPart, Message, Prompt, TextPart, build_prompt
from omniloom.speech import espeak
from omniloom.speech.asr import Transcriber, TranscriptionOptions
from omniloom.speech.tts import Synthesizer
from omniloom.training.trainer import step_precision

TRANSCRIBE = ("Transcribe the audio.", "Write down what is said.", "What does the speaker say?")
TRAIN_VOICES = ("piper:0.85", "piper:1.0", "piper:1.2", "en-gb", "en-gb-scotland", "en-029")
HELD_OUT_VOICE = "en-us"
_SUBJECTS = (
    "the old man", "my sister", "a small dog", "the teacher", "our neighbour", "the driver",
    "a young girl", "the doctor", "his friend", "the farmer", "my uncle", "the baker",
)  # fmt: skip
_VERBS = (
    "found", "painted", "carried", "opened", "cleaned", "sold", "watched", "fixed", "bought",
    "lost", "moved", "cooked",
)  # fmt: skip
_OBJECTS = (
    "a red box", "the blue door", "three apples", "an old bicycle", "the wooden chair",
    "a heavy bag", "two letters", "the green window", "a warm coat", "the broken clock",
)  # fmt: skip
_PLACES = (
    "in the garden", "near the station", "at the market", "behind the school",
    "on the bridge", "in the kitchen", "by the lake", "at the office",
)  # fmt: skip
_PLAIN = re.compile(r"[A-Z][A-Za-z ,'-]+[.!?]")
_FIRST_SENTENCE = re.compile(r"^.*?[.!?](?=\s|$)")
SENTENCE_TOPICS = (
    "the weather", "cooking dinner", "a train journey", "the ocean", "a birthday party",
    "gardening", "a rainy day", "learning to swim", "a library", "the mountains", "coffee",
    "a football match", "winter", "a busy market", "music", "a lost cat", "the moon",
    "a new job", "painting a house", "a long walk", "breakfast", "the city at night",
    "a hospital", "a school trip", "fishing", "a thunderstorm", "friendship", "a museum",
    "baking bread", "a farm", "an airport", "reading a book", "the forest", "a wedding",
    "a bicycle ride", "the beach in summer", "a small village", "cleaning the kitchen",
    "a phone call", "a history lesson", "shopping for shoes", "a river", "the stars",
    "a concert", "a family dinner", "planting trees", "a snowy morning", "an old castle",
    "a doctor's visit", "writing a letter", "a camping trip", "the bus stop", "a quiet evening",
    "a bakery", "an office meeting", "a zoo", "a hot afternoon", "a garden party",
)  # fmt: skip
_TIMES = ("yesterday", "this morning", "last week", "on Sunday", "after lunch", "at night")
_TOPICS = (
    ("What is the capital of", ("Italy", "Spain", "Germany", "Japan", "Egypt", "Canada")),
    ("What colour is", ("grass", "snow", "a banana", "a tomato", "coal", "an orange")),
    ("What sound does", ("a cat make", "a dog make", "a cow make", "a duck make")),
    ("How many", ("legs does a spider have", "months are in a year", "hours are in a day")),
    ("What do you use to", ("write a letter", "cut paper", "open a door", "see in the dark")),
    ("Where do", ("fish live", "birds build nests", "people buy bread", "trains stop")),
    ("Give me a word that rhymes with", ("cat", "tree", "book", "rain", "light")),
    ("What is", ("two plus three", "ten minus four", "five times two", "the first letter")),
)


@dataclass(frozen=True)
class AudioRecipe:
    clips: int = 1200  # transcription clips
    generated: int = 600  # of them, sentences the LLM writes (the rest from the grammar)
    questions: int = 240  # spoken questions (self-distilled answers)
    steps: int = 800
    batch: int = 8
    lr: float = 1e-3
    seed: int = 0
    precision: str = "bfloat16"


QUICK_AUDIO_RECIPE = AudioRecipe(clips=8, generated=4, questions=4, steps=3, batch=4)


def trainable_model() -> LoadedModel:
    """The embedded model as served (its vision adapter in), with a fresh audio branch in
    place of any installed one, so a run starts from the same weights whatever is installed."""
    kernels.load()
    model = load_default(SpecContext(weight_format="float32"), audio_adapter_path=None)
    vlm = model.vlm
    scale = vlm.backbone.model.embed_tokens.weight.float().std().item()
    branch = build_audio_branch(
        embedded_asr_path(), vlm.backbone.config.hidden_size, embedding_scale=scale
    )
    vlm.attach_audio(branch)
    model.processors["audio"] = audio_processor(vlm)
    return model


def training_sentences(count: int, seed: int) -> list[str]:
    """Distinct grammar sentences, none of them held out."""
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < count:
        words = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)]
        words += [rng.choice(_PLACES)] if rng.random() < 0.7 else []
        words += [rng.choice(_TIMES)] if rng.random() < 0.5 else []
        sentence = " ".join(words)
        out.add(sentence[0].upper() + sentence[1:] + ".")
    return sorted(out - set(held_out.HELD_OUT_SENTENCES))


def training_questions(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    pool = [f"{lead} {tail}?" for lead, tails in _TOPICS for tail in tails]
    held = {q for q, _ in held_out.SPOKEN_QUESTIONS}
    pool = [q for q in pool if q not in held]
    return [rng.choice(pool) for _ in range(count)]


def speak(text: str, voice: str, synthesizer: Synthesizer | None) -> np.ndarray:
    """``text`` in ``voice`` (``piper:SPEED`` or an espeak-ng voice), 16 kHz float32."""
    if voice.startswith("piper:"):
        speed = float(voice.split(":")[1])
        samples = np.concatenate(list(synthesizer.speak(text, speed=speed)))
        return resample(samples, OUTPUT_RATE, 16_000)
    samples, rate = espeak.speak(text, voice=voice)
    return resample(samples, rate, 16_000)


def clip_of(samples: np.ndarray, name: str) -> DecodedAudio:
    return DecodedAudio(samples.astype(np.float32), "pcm", name)


@dataclass
class AudioExample:
    ids: list[int]
    answer_start: int
    positions: list[torch.Tensor]  # the clip's encoder positions, per window


def audio_prompt(model: LoadedModel, clip: DecodedAudio, instruction: str | None) -> Prompt:
    item = model.processors["audio"].prepare(clip)
    parts = [MediaPart(item)] + ([TextPart(instruction)] if instruction else [])
    return build_prompt([Message("user", parts)], model.template, model.tokenizer)


def make_example(model: LoadedModel, clip: DecodedAudio, instruction, answer: str):
    prompt = audio_prompt(model, clip, instruction)
    end = model.tokenizer.token_id("<|im_end|>")
    answer_ids = [*model.tokenizer.encode(answer), end]
    item = prompt.spans[0].item
    positions = model.vlm.audio.positions(item.features())
    return AudioExample(prompt.token_ids + answer_ids, len(prompt.token_ids), positions)


def batch_loss(model: LoadedModel, examples: list[AudioExample]) -> torch.Tensor:
    """Mean cross-entropy over answer tokens of a right-padded batch."""
    vlm = model.vlm
    length = max(len(e.ids) for e in examples)
    pad = model.tokenizer.eos_id
    ids = torch.tensor([e.ids + [pad] * (length - len(e.ids)) for e in examples])
    embeds = vlm.embed_ids(ids.flatten()).view(len(examples), length, -1)
    media = [vlm.audio.project(e.positions) for e in examples]
    embeds = splice_media(embeds, vlm.placeholder_mask(ids), media)
    hidden = vlm.backbone.hidden_states(embeds)
    rows = [b for b, e in enumerate(examples) for _ in range(e.answer_start, len(e.ids))]
    cols = [c - 1 for e in examples for c in range(e.answer_start, len(e.ids))]
    targets = [t for e in examples for t in e.ids[e.answer_start :]]
    logits = vlm.backbone.lm_head(hidden[rows, cols]).float()
    return F.cross_entropy(logits, torch.tensor(targets))


class _Collect:
    def __init__(self):
        self.text, self.error, self.done = "", None, threading.Event()

    def __call__(self, event) -> None:
        if isinstance(event, Delta):
            self.text += event.text
        elif isinstance(event, Done | Failed):
            self.error = getattr(event, "error", None)
            self.done.set()


def answers(
    model: LoadedModel, prompts: list[Prompt], max_tokens: int = 48, temperature: float = 0.0
) -> list[str]:
    """Answers to ``prompts``, batched in the engine: greedy, or sampled with seeds 0, 1, ..."""
    engine = Engine(model, EngineSettings(step_tokens=256))
    try:
        outcomes = [_Collect() for _ in prompts]
        for i, (prompt, outcome) in enumerate(zip(prompts, outcomes, strict=True)):
            params = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=i)
            engine.submit(Job(prompt, params, outcome))
        for outcome in outcomes:
            outcome.done.wait(600)
            if outcome.error is not None:
                raise outcome.error
        return [o.text.strip() for o in outcomes]
    finally:
        engine.shutdown()


def generated_sentences(model: LoadedModel, count: int) -> list[str]:
    """Everyday sentences the LLM writes on many topics (sampled): words of every kind, where
    the grammar has a few dozen. The first sentence of each answer is kept if plain (letters
    and punctuation, 4–24 words)."""
    asks = [f"Write one short, simple sentence about {t}." for t in SENTENCE_TOPICS]
    prompts = [text_prompt(model, asks[i % len(asks)]) for i in range(count * 4)]
    held = set(held_out.HELD_OUT_SENTENCES)
    kept: list[str] = []
    for text in answers(model, prompts, max_tokens=40, temperature=0.7):
        first = _FIRST_SENTENCE.match(text.strip().strip('"'))
        sentence = first.group() if first else ""
        plain = _PLAIN.fullmatch(sentence) and 4 <= len(sentence.split()) <= 24
        if plain and sentence not in held and sentence not in kept:
            kept.append(sentence)
    return kept[:count]


def text_prompt(model: LoadedModel, text: str) -> Prompt:
    return build_prompt([Message("user", [TextPart(text)])], model.template, model.tokenizer)


@dataclass
class AudioTrainer:
    model: LoadedModel
    recipe: AudioRecipe
    out: Path
    log: list[dict] = field(default_factory=list)

    @property
    def branch(self) -> AudioBranch:
        return self.model.vlm.audio

    def examples(self, synthesizer: Synthesizer) -> list[AudioExample]:
        r, rng = self.recipe, random.Random(self.recipe.seed)
        examples = []
        written = generated_sentences(self.model, r.generated)
        grammar = training_sentences(r.clips - len(written), r.seed)
        for i, sentence in enumerate(written + grammar):
            clip = clip_of(speak(sentence, rng.choice(TRAIN_VOICES), synthesizer), f"s{i}")
            examples.append(make_example(self.model, clip, rng.choice(TRANSCRIBE), sentence))
        questions = training_questions(r.questions, r.seed)
        targets = answers(self.model, [text_prompt(self.model, q) for q in questions])
        for i, (question, target) in enumerate(zip(questions, targets, strict=True)):
            clip = clip_of(speak(question, rng.choice(TRAIN_VOICES), synthesizer), f"q{i}")
            examples.append(make_example(self.model, clip, None, target))
        return examples

    def trainable(self) -> list[torch.nn.Parameter]:
        vlm = self.model.vlm
        vlm.requires_grad_(False)
        vlm.media_embed.weight.requires_grad_(True)
        self.branch.projector.requires_grad_(True)
        return [*self.branch.projector.parameters(), vlm.media_embed.weight]

    def run(self, synthesizer: Synthesizer) -> None:
        r = self.recipe
        self.out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        examples = self.examples(synthesizer)
        self.log.append({"examples": len(examples), "data_s": time.perf_counter() - started})
        params = self.trainable()
        optimizer = torch.optim.AdamW(params, lr=r.lr, weight_decay=0.0)
        rng = random.Random(r.seed)
        for step in range(r.steps):
            lr = r.lr * min(1.0, (step + 1) / 20) * (0.1 + 0.9 * (1 - step / r.steps))
            for group in optimizer.param_groups:
                group["lr"] = lr
            with step_precision(r.precision):
                loss = batch_loss(self.model, rng.sample(examples, min(r.batch, len(examples))))
            optimizer.zero_grad()
            loss.backward()
            self._keep_other_media_rows()
            optimizer.step()
            elapsed = time.perf_counter() - started
            self.log.append({"step": step, "loss": loss.item(), "lr": lr, "s": elapsed})
            if step % 20 == 0 or step == r.steps - 1:
                print(f"step {step}/{r.steps} loss {loss.item():.3f} ({elapsed:.0f} s)", flush=True)
        self.model.vlm.requires_grad_(False)

    def _keep_other_media_rows(self) -> None:
        """Only the audio markers' rows of the media table learn."""
        vlm = self.model.vlm
        grad = vlm.media_embed.weight.grad
        keep = torch.ones(grad.shape[0], dtype=torch.bool)
        keep[vlm.audio_marker_rows] = False
        grad[keep] = 0

    def markers(self) -> torch.Tensor:
        vlm = self.model.vlm
        return vlm.media_embed.weight.detach()[vlm.audio_marker_rows]

    def save(self, evaluation: dict) -> Path:
        path = self.out / "audio_adapter.safetensors"
        metadata = {
            "recipe": json.dumps(asdict(self.recipe)),
            "evaluation": json.dumps(evaluation),
        }
        write_audio_adapter(path, self.branch, self.markers(), metadata)
        (self.out / "log.json").write_text(json.dumps(self.log))
        return path


def evaluate(model: LoadedModel, synthesizer: Synthesizer, transcriber: Transcriber) -> dict:
    """Native against cascade on held-out speech: WER of transcription and spoken-question
    accuracy, per voice (espeak-ng's held-out en-us, and Piper)."""
    result: dict = {}
    for voice in (HELD_OUT_VOICE, "piper:1.0"):
        sentences = [speak(s, voice, synthesizer) for s in held_out.HELD_OUT_SENTENCES]
        questions = [speak(q, voice, synthesizer) for q, _ in held_out.SPOKEN_QUESTIONS]
        heard = [_cascade(transcriber, s) for s in sentences]
        native = answers(
            model,
            [
                audio_prompt(model, clip_of(s, f"e{i}"), TRANSCRIBE[0])
                for i, s in enumerate(sentences)
            ],
        )
        cascade_q = answers(
            model, [text_prompt(model, _cascade(transcriber, q)) for q in questions]
        )
        native_q = answers(
            model,
            [audio_prompt(model, clip_of(q, f"eq{i}"), None) for i, q in enumerate(questions)],
        )
        accepted = [a for _, a in held_out.SPOKEN_QUESTIONS]
        result[voice] = {
            "wer_native": word_error_rate(list(held_out.HELD_OUT_SENTENCES), native),
            "wer_cascade": word_error_rate(list(held_out.HELD_OUT_SENTENCES), heard),
            "questions_native": sum(map(held_out.answered, native_q, accepted)),
            "questions_cascade": sum(map(held_out.answered, cascade_q, accepted)),
            "questions": len(accepted),
            "native_transcripts": native[:3],
        }
    result["native_wins"] = all(
        v["wer_native"] <= v["wer_cascade"] and v["questions_native"] >= v["questions_cascade"]
        for k, v in result.items()
        if isinstance(v, dict)
    )
    return result


def _cascade(transcriber: Transcriber, samples: np.ndarray) -> str:
    segments = transcriber.segments(iter([samples]), TranscriptionOptions())
    return "".join(s.text for s in segments).strip()
