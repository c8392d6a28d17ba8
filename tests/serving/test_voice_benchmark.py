"""``benchmarks/voice.py`` scaled down: one sentence per voice, one spoken turn, one barge-in,
through the real server."""

from __future__ import annotations

from tests.conftest import benchmark_module


def test_speech_models_give_wer_and_real_time_factors():
    voice = benchmark_module("voice")
    models = voice.speech_models(sentences=1)
    assert set(models) == {"espeak", "piper", "tts_rtf"}
    assert all(0 <= models[v]["wer"] <= 1 and models[v]["asr_rtf"] > 0 for v in ("espeak", "piper"))
    assert 0 < models["tts_rtf"] < 1  # faster than real time, or a voice loop cannot work


def test_a_turn_and_a_barge_in_are_timed_stage_by_stage(server_url):
    voice = benchmark_module("voice")
    url = server_url.replace("http", "ws") + "/v1/realtime"
    turn = voice.question_turn(url, *voice.SPOKEN_QUESTIONS[0])
    stages = ("vad_endpoint_s", "asr_s", "first_token_s", "first_audio_s")
    assert all(turn[s] > 0 for s in stages)
    assert turn["speech_end_to_audio_s"] > sum(turn[s] for s in stages) - 0.05
    assert "capital" in turn["heard"].lower()  # espeak-ng's rendering varies a little per call
    stopped = voice.barge_in(url)
    assert stopped["speech_onset_to_cancel_s"] is not None and stopped["audio_after_onset_s"] < 1
