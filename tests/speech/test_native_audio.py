"""The embedded model's native audio path: Whisper tiny.en's encoder read from the speech
recogniser's CTranslate2 file (equal to CTranslate2's own encoder), spans of 12.5 tokens a second
predicted from the duration, the audio adapter's round trip into the served model, and a short
training run that moves only what it trains."""

from __future__ import annotations

import ctranslate2
import numpy as np
import pytest
import torch

from omniloom.models.audio_branch import (
    build_audio_branch,
    embedded_asr_path,
    read_audio_adapter,
    write_audio_adapter,
)
from omniloom.models.encoders.whisper import WhisperEncoder
from omniloom.models.lora import lora_layers
from omniloom.models.specs.base import SpecContext
from omniloom.models.specs.omniloom_smol import load
from omniloom.models.vlm import AUDIO_MARKERS
from omniloom.models.weights.ctranslate2_whisper import whisper_encoder
from omniloom.processing.log_mel import log_mel
from omniloom.processing.whisper_audio import audio_tokens
from omniloom.speech.tts import Synthesizer
from omniloom.training import audio as audio_training
from omniloom.training.audio import clip_of
from tests.speech.audio_files import tone


def test_encoder_from_the_ctranslate2_file_equals_ctranslate2():
    cfg, weights = whisper_encoder(embedded_asr_path())
    assert (cfg.d_model, cfg.layers, cfg.heads, cfg.n_mels) == (384, 4, 6, 80)
    encoder = WhisperEncoder(cfg)
    encoder.load_state_dict(weights, strict=True)
    rng = np.random.default_rng(0)
    mel = log_mel((0.1 * rng.standard_normal(16_000 * 30)).astype(np.float32), 80)
    reference = ctranslate2.models.Whisper(str(embedded_asr_path()), compute_type="float32")
    expected = np.array(reference.encode(ctranslate2.StorageView.from_array(mel[None].numpy())))
    with torch.inference_mode():
        ours = encoder(mel, 3000).numpy()
    assert ours.shape == expected.shape[1:] == (1500, 384)
    assert np.abs(ours - expected[0]).max() < 1e-2 * np.abs(expected).max()


@pytest.fixture(scope="module")
def adapter_file(tmp_path_factory):
    """An audio adapter with a seeded projector and markers, as training writes one."""
    path = tmp_path_factory.mktemp("audio") / "audio_adapter.safetensors"
    branch = build_audio_branch(embedded_asr_path(), 576, seed=3)
    markers = torch.randn(2, 576, generator=torch.Generator().manual_seed(3))
    write_audio_adapter(path, branch, markers, {"evaluation": '{"native_wins": false}'})
    return path, branch, markers


def test_the_adapter_round_trips_into_the_served_model(adapter_file):
    path, branch, markers = adapter_file
    adapter = read_audio_adapter(path)
    assert not adapter.native_wins
    model = load(SpecContext(), audio_adapter_path=path)
    assert "audio" in model.modalities and "audio" in model.processors
    assert model.audio_path == "cascade"  # its evaluation did not find native better
    vlm = model.vlm
    for name, value in branch.projector.state_dict().items():
        torch.testing.assert_close(vlm.audio.projector.state_dict()[name], value)
    start = vlm.media_vocab.id("<|audio_start|>") - vlm.media_vocab.base_id
    torch.testing.assert_close(vlm.media_embed.weight[start], markers[0])
    clip = clip_of(tone(2.0), "two-seconds")
    item = model.processors["audio"].prepare(clip)
    assert item.num_placeholders() == audio_tokens(32_000, 4) == 25  # 12.5 a second
    (embeddings,) = vlm.encode([item])
    assert embeddings.shape == (25, 576)


def test_a_short_training_run_trains_the_projector_and_audio_markers_only(tmp_path):
    model = audio_training.trainable_model()
    vlm = model.vlm
    before_table = vlm.media_embed.weight.detach().clone()
    before_projector = vlm.audio.projector.linear_1.weight.detach().clone()
    lora = lora_layers(vlm.backbone)[0]
    frozen = [p.detach().clone() for p in (lora.base.weight, lora.lora_a, lora.lora_b)]
    recipe = audio_training.AudioRecipe(clips=4, generated=2, questions=2, steps=2, batch=3)
    trainer = audio_training.AudioTrainer(model, recipe, tmp_path)
    trainer.run(Synthesizer())
    changed = (vlm.media_embed.weight != before_table).any(dim=1).nonzero().flatten().tolist()
    markers = [vlm.media_vocab.id(n) - vlm.media_vocab.base_id for n in AUDIO_MARKERS]
    assert changed == markers
    assert not torch.equal(vlm.audio.projector.linear_1.weight, before_projector)
    for now, before in zip((lora.base.weight, lora.lora_a, lora.lora_b), frozen, strict=True):
        assert torch.equal(now, before)
    path = trainer.save({"native_wins": True})
    assert read_audio_adapter(path).native_wins


def test_training_speech_never_uses_the_held_out_sentences_or_voice():
    from omniloom.eval import speech

    sentences = audio_training.training_sentences(500, seed=0)
    assert len(sentences) == len(set(sentences)) >= 490
    assert not set(sentences) & set(speech.HELD_OUT_SENTENCES)
    questions = set(audio_training.training_questions(100, seed=0))
    assert not questions & {q for q, _ in speech.SPOKEN_QUESTIONS}
    assert audio_training.HELD_OUT_VOICE not in audio_training.TRAIN_VOICES
