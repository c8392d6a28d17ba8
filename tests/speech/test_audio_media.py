"""Audio decoding and encoding: every input container decodes to 16 kHz mono of the right
length, in bounded chunks; bad input is refused with a message that says what is wrong; every
output format decodes back."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from omniloom.config import Limits
from omniloom.errors import MediaError
from omniloom.media.audio import SAMPLE_RATE, decode_audio, probe, stream_chunks
from omniloom.media.audio_out import OUTPUT_RATE, SPEECH_FORMATS, encode, encode_stream
from omniloom.speech.asr import cut_at_quiet_points
from tests.speech.audio_files import CONTAINERS, audio_file, tone

LIMITS = Limits()


@pytest.mark.parametrize("fmt", sorted(CONTAINERS))
def test_every_container_decodes_to_16k_mono(fmt):
    data = audio_file(tone(2.0, rate=22_050), 22_050, fmt)
    decoded = decode_audio(data, LIMITS)
    assert decoded.samples.dtype == np.float32
    assert abs(decoded.seconds - 2.0) < 0.1  # codec priming and padding stay within 0.1 s
    spectrum = np.abs(np.fft.rfft(decoded.samples[:SAMPLE_RATE]))
    assert abs(int(spectrum.argmax()) - 440) <= 2  # the tone survives, at 1 Hz per bin


def test_long_audio_streams_in_bounded_chunks():
    data = audio_file(tone(7.5), SAMPLE_RATE, "flac")
    chunks = list(stream_chunks(data, LIMITS, chunk_seconds=2.0))
    assert [len(c) for c in chunks[:-1]] == [2 * SAMPLE_RATE] * 3
    assert sum(len(c) for c in chunks) == pytest.approx(7.5 * SAMPLE_RATE, abs=SAMPLE_RATE // 50)


def test_quiet_point_cuts_keep_every_sample_and_cut_in_silence():
    speech = tone(3.0)
    speech[int(2.4 * SAMPLE_RATE) : int(2.6 * SAMPLE_RATE)] = 0.0  # a pause near the end
    pieces = [speech, tone(1.0)]
    cut = list(cut_at_quiet_points(iter(pieces)))
    assert np.array_equal(np.concatenate(cut), np.concatenate(pieces))
    assert 2.4 <= len(cut[0]) / SAMPLE_RATE <= 2.6


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"RIFF\x00\x00\x00\x00WAVEjunk" * 50, "could not be decoded"),
        (b"\x89PNG\r\n\x1a\n" + bytes(200), "no audio stream"),
    ],
    ids=["empty", "corrupt-wav", "png"],
)
def test_bad_bytes_are_refused(data, message):
    with pytest.raises(MediaError, match=message):
        decode_audio(data, LIMITS)


def test_limits_are_enforced_before_decoding():
    data = audio_file(tone(3.0), SAMPLE_RATE, "wav")
    with pytest.raises(MediaError, match="limit is 100 bytes"):
        probe(data, dataclasses.replace(LIMITS, max_audio_bytes=100))
    with pytest.raises(MediaError, match="longer than the limit of 2 seconds"):
        probe(data, dataclasses.replace(LIMITS, max_audio_seconds=2.0))


def test_duration_is_enforced_while_decoding_when_the_header_says_nothing():
    data = audio_file(tone(3.0), SAMPLE_RATE, "mp3")  # an mp3 header carries no duration here
    short = dataclasses.replace(LIMITS, max_audio_seconds=2.0)
    with pytest.raises(MediaError, match="longer than the limit"):
        list(stream_chunks(data, short, chunk_seconds=0.5))


@pytest.mark.parametrize("fmt", SPEECH_FORMATS)
def test_every_speech_format_decodes_back(fmt):
    clip = tone(1.5, rate=OUTPUT_RATE)
    data = encode(clip, fmt)
    if fmt == "pcm":
        assert len(data) == 2 * len(clip)
        return
    assert abs(decode_audio(data, LIMITS).seconds - 1.5) < 0.1


def test_speech_is_encoded_chunk_by_chunk():
    parts = list(encode_stream(iter([tone(0.5, OUTPUT_RATE)] * 3), "mp3"))
    assert len(parts) >= 3 and all(parts[1:3])  # bytes after each sentence, not only at the end


def test_a_stream_resampled_chunk_by_chunk_equals_the_whole_clip():
    from omniloom.media.audio_out import Resampler, resample

    clip = tone(1.0, rate=OUTPUT_RATE, hz=330.0)
    stream = Resampler(OUTPUT_RATE, SAMPLE_RATE)
    pieces = [stream(clip[i : i + 960]) for i in range(0, len(clip), 960)] + [stream(None)]
    assert np.array_equal(np.concatenate(pieces), resample(clip, OUTPUT_RATE, SAMPLE_RATE))
