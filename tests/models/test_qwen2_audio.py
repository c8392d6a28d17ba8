"""Qwen2-Audio through its spec, against ``transformers`` on the same tiny random checkpoint:
log-mel features, prompt ids and audio token counts (predicted from the duration), logits with
0, 1 and 3 clips of different lengths, 16 greedy tokens, and the same outputs in the engine
beside other requests. Clips longer than 30 s, which ``transformers`` cuts, keep every window."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omniloom.config import Limits
from omniloom.media.audio import decode_audio
from omniloom.models.registry import load_model
from omniloom.processing.log_mel import log_mel
from omniloom.processing.prompt import MediaPart, Message, TextPart, build_prompt
from omniloom.processing.whisper_audio import audio_tokens
from tests.models.tiny_checkpoints import qwen2_audio
from tests.models.vlm_parity import assert_greedy_in_engine, assert_logits_match
from tests.speech.audio_files import audio_file, tone

SECONDS = (1.0, 2.37, 0.61)
QUESTION = "What is said in this clip?"


def _clips() -> list[np.ndarray]:
    """A tone, a chirp and noise, decoded from wav files as the server decodes uploads."""
    rng = np.random.default_rng(0)
    raw = [
        tone(SECONDS[0]),
        tone(SECONDS[1], hz=180.0) * np.linspace(0.2, 1.0, int(SECONDS[1] * 16_000)),
        0.1 * rng.standard_normal(int(SECONDS[2] * 16_000)),
    ]
    return [decode_audio(audio_file(c.astype(np.float32), 16_000, "wav"), Limits()) for c in raw]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("qwen2-audio")
    reference, processor = qwen2_audio(directory)
    ours = load_model(weights=directory, dtype="float32")
    return reference, processor, ours


def _ours(model, clips):
    items = [model.processors["audio"].prepare(c) for c in clips]
    parts = [*[MediaPart(i) for i in items], TextPart(QUESTION)]
    return build_prompt([Message("user", parts)], model.template, model.tokenizer), items


def _reference_inputs(processor, clips):
    content = [{"type": "audio", "audio_url": "clip"} for _ in clips]
    messages = [{"role": "user", "content": [*content, {"type": "text", "text": QUESTION}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    audio = [c.samples for c in clips] or None
    return processor(text=[text], audio=audio, sampling_rate=16_000, return_tensors="pt")


def test_spec_is_chosen_from_the_checkpoint(checkpoint):
    _, _, ours = checkpoint
    assert ours.family == "qwen2-audio"
    assert ours.modalities == {"text", "audio"}
    assert set(ours.processors) == {"audio"}


def test_features_prompt_ids_and_token_counts_match_the_processor(checkpoint):
    reference, processor, ours = checkpoint
    clips = _clips()
    prompt, items = _ours(ours, clips)
    inputs = _reference_inputs(processor, clips)
    ids = inputs["input_ids"][0].tolist()
    assert prompt.token_ids == ids
    counts = [audio_tokens(len(c.samples)) for c in clips]
    assert counts == [25, 59, 15]  # 25 per second
    assert prompt.tokens_by_modality()["audio"] == sum(counts) + 2 * len(clips)
    assert ids.count(reference.config.audio_token_index) == sum(counts)
    windows = [w for item in items for w in item.features()]
    for (mel, _), expected in zip(windows, inputs["input_features"], strict=True):
        torch.testing.assert_close(mel, expected, atol=1e-5, rtol=0)
    filled = inputs["feature_attention_mask"].sum(-1).tolist()
    assert [frames for _, frames in windows] == filled


@pytest.mark.parametrize("count", [0, 1, 3])
def test_logits_match_transformers(checkpoint, count):
    reference, processor, ours = checkpoint
    clips = _clips()[:count]
    prompt, items = _ours(ours, clips)
    assert_logits_match(ours, prompt, items, reference, _reference_inputs(processor, clips))


def test_greedy_tokens_in_the_engine_beside_other_requests(checkpoint):
    reference, processor, ours = checkpoint
    clips = _clips()
    assert_greedy_in_engine(
        ours,
        reference,
        lambda k: _ours(ours, clips[:k])[0],
        lambda k: _reference_inputs(processor, clips[:k]),
    )


def test_a_clip_over_30_seconds_keeps_every_window(checkpoint):
    _, _, ours = checkpoint
    clip = decode_audio(audio_file(tone(65.0), 16_000, "wav"), Limits())
    item = ours.processors["audio"].prepare(clip)
    assert item.num_placeholders() == audio_tokens(len(clip.samples)) == 2 * 750 + 125
    assert [filled for _, filled in item.features()] == [3000, 3000, 500]
    (embeddings,) = ours.vlm.encode([item])
    assert embeddings.shape == (1625, ours.vlm.backbone.config.hidden_size)
    torch.testing.assert_close(item.features()[2][0], log_mel(clip.samples[960_000:], 128))
