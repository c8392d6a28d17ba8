"""Continuous batching on the real default model: batched equals alone, prefix cache,
preemption with recompute, cancellation, forks for ``n``, logprobs."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from omniloom.config import EngineSettings, ImageSettings, Limits
from omniloom.engine.engine import Engine, Job
from omniloom.engine.sampling import SamplingParams
from omniloom.engine.sequence import Delta, Done, Failed, Finished
from omniloom.media.image import decode_image
from omniloom.processing.image_item import prepare_image
from omniloom.processing.prompt import MediaPart, Message, TextPart, build_prompt

GREEDY = SamplingParams(max_tokens=24, temperature=0.0)
QUESTIONS = ("Name three colours.", "What is 2+2?", "Write a haiku about rain.", "Who are you?")


class Outcome:
    def __init__(self, n: int):
        self.texts = [""] * n
        self.reasons = [""] * n
        self.logprobs: list = []
        self.stats = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def __call__(self, event) -> None:
        if isinstance(event, Delta):
            self.texts[event.index] += event.text
            self.logprobs += event.logprobs
        elif isinstance(event, Finished):
            self.reasons[event.index] = event.reason
        elif isinstance(event, Done):
            self.stats = event.stats
            self.done.set()
        elif isinstance(event, Failed):
            self.error = event.error
            self.done.set()


def submit(engine: Engine, prompt, params=GREEDY) -> tuple[Job, Outcome]:
    outcome = Outcome(params.n)
    return engine.submit(Job(prompt, params, outcome)), outcome


def run_all(engine: Engine, prompts, params=GREEDY, failures_ok=False) -> list[Outcome]:
    outcomes = [submit(engine, p, params)[1] for p in prompts]
    for o in outcomes:
        assert o.done.wait(180)
        assert failures_ok or o.error is None, o.error
    return outcomes


def text_prompt(model, question: str):
    return build_prompt([Message("user", [TextPart(question)])], model.template, model.tokenizer)


def image_prompt(model, jpeg: bytes, question: str, detail: str = "low"):
    item = prepare_image(
        decode_image(jpeg, Limits()), detail, ImageSettings(), model.tile_layout,
        model.vlm.media_vocab,
    )  # fmt: skip
    parts = [MediaPart(item), TextPart(question)]
    return build_prompt([Message("user", parts)], model.template, model.tokenizer)


@pytest.fixture(scope="module")
def engine(default_model):
    engine = Engine(default_model, EngineSettings(step_tokens=64))
    yield engine
    engine.shutdown()


def test_batched_outputs_equal_outputs_alone(engine, default_model, astronaut_jpeg):
    prompts = [text_prompt(default_model, q) for q in QUESTIONS]
    prompts.append(image_prompt(default_model, astronaut_jpeg, "What is in the picture?"))
    alone = [run_all(engine, [p])[0].texts for p in prompts]
    together = run_all(engine, prompts)
    assert [o.texts for o in together] == alone
    assert all(o.reasons[0] in ("stop", "length") for o in together)


def test_same_image_again_reuses_its_kv(engine, default_model, astronaut_jpeg):
    from tests.conftest import png_bytes

    prompt = image_prompt(default_model, astronaut_jpeg, "Describe it.", detail="high")
    first, second = run_all(engine, [prompt])[0], run_all(engine, [prompt])[0]
    image_span, block = prompt.spans[0], engine.settings.block_size
    image_end = image_span.start + image_span.length
    assert second.stats.cached_tokens >= image_end // block * block  # whole blocks only
    assert second.stats.encoder_cache_hits["image"] == 1 and not second.stats.encoder_runs
    assert second.texts == first.texts
    other = png_bytes(__import__("numpy").full((64, 64, 3), 200, dtype="uint8"))
    different = image_prompt(default_model, other, "Describe it.", detail="high")
    third = run_all(engine, [different])[0]
    assert third.stats.cached_tokens <= image_span.start  # only the text before the image


def test_preemption_recomputes_and_keeps_outputs(default_model):
    small = dataclasses.replace(default_model, context_length=256)  # pool: 17 blocks of 16
    engine = Engine(small, EngineSettings(kv_cache_mb=1, max_batch=8, step_tokens=64))
    try:
        params = SamplingParams(max_tokens=60, temperature=0.0)
        prompts = [text_prompt(default_model, q) for q in QUESTIONS * 2]
        together = run_all(engine, prompts, params)
        alone = [run_all(engine, [p], params)[0].texts for p in prompts]
        assert sum(o.stats.preemptions for o in together) > 0
        assert [o.texts for o in together] == alone
        assert engine.blocks.used() == 0
    finally:
        engine.shutdown()


def test_cancel_stops_and_frees_blocks(engine, default_model):
    params = SamplingParams(max_tokens=400, temperature=0.0, ignore_eos=True)
    job, outcome = submit(engine, text_prompt(default_model, "Count to a thousand."), params)
    keep = run_all(engine, [text_prompt(default_model, "What is 2+2?")])[0]
    job.cancelled.set()
    assert outcome.done.wait(60)
    assert outcome.reasons == ["cancelled"] and outcome.stats.completion_tokens < 400
    assert keep.reasons == ["stop"]
    assert engine.blocks.used() == 0


def test_n_choices_prefill_once_and_follow_their_seeds(engine, default_model):
    prompt = text_prompt(default_model, "Tell me a joke.")
    params = SamplingParams(max_tokens=16, temperature=1.0, seed=5, n=3)
    hits = engine.blocks.hits
    first = run_all(engine, [prompt], params)[0]
    full_blocks = (len(prompt.token_ids) - 1) // engine.settings.block_size
    assert engine.blocks.hits - hits >= 2 * full_blocks  # the two forks re-use the prompt's KV
    again = run_all(engine, [prompt], params)[0]
    assert first.texts == again.texts and len(set(first.texts)) == 3


def test_logprobs_are_log_probabilities_of_sampled_tokens(engine, default_model):
    params = SamplingParams(max_tokens=8, temperature=0.0, logprobs=3, ignore_eos=True)
    outcome = run_all(engine, [text_prompt(default_model, "Say hello.")], params)[0]
    assert len(outcome.logprobs) == 8
    for entry in outcome.logprobs:
        best_id, best = entry.top[0]
        assert entry.token_id == best_id and entry.logprob == pytest.approx(best)
        assert all(lp <= 0 for _, lp in entry.top) and len(entry.top) == 3


def test_encoder_fault_fails_only_its_request(engine, default_model, astronaut_jpeg, monkeypatch):
    from tests.conftest import png_bytes

    np = __import__("numpy")
    poison = png_bytes(np.full((32, 32, 3), (255, 0, 255), dtype="uint8"))
    vlm, real = default_model.vlm, default_model.vlm.encode_tiles

    def crashing(tiles):
        magenta = (tiles[:, 0] == 255) & (tiles[:, 1] == 0) & (tiles[:, 2] == 255)
        if magenta.flatten(1).float().mean(1).max() > 0.5:
            raise RuntimeError("encoder crashed")
        return real(tiles)

    monkeypatch.setattr(vlm, "encode_tiles", crashing)
    prompts = [
        image_prompt(default_model, poison, "What colour is this?"),
        image_prompt(default_model, astronaut_jpeg, "Who is this?"),
        text_prompt(default_model, "What is 2+2?"),
    ]
    bad, good_image, good_text = run_all(engine, prompts, failures_ok=True)
    assert isinstance(bad.error, RuntimeError)
    assert good_image.error is None and good_image.texts[0]
    assert good_text.error is None and good_text.texts[0]
    monkeypatch.undo()
    assert run_all(engine, [text_prompt(default_model, "Hi")])[0].texts[0]  # still serving
