"""A transcript in each of the response formats OpenAI's transcription API offers."""

from __future__ import annotations

from omniloom.speech.asr import Segment

TRANSCRIPT_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
_LANGUAGE_NAMES = {"en": "english"}


def transcript_text(segments: list[Segment]) -> str:
    return "".join(s.text for s in segments).strip()


def _clock(seconds: float, decimal: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def srt(segments: list[Segment]) -> str:
    cues = [
        f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n"
        for i, s in enumerate(segments, start=1)
    ]
    return "\n".join(cues)


def vtt(segments: list[Segment]) -> str:
    cues = [
        f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n" for s in segments
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


def verbose_json(
    segments: list[Segment], language: str, duration: float, task: str, granularities: set[str]
) -> dict:
    body: dict = {
        "task": task,
        "language": _LANGUAGE_NAMES.get(language, language),
        "duration": round(duration, 3),
        "text": transcript_text(segments),
    }
    if "segment" in granularities or not granularities:
        body["segments"] = [_segment(s) for s in segments]
    if "word" in granularities:
        body["words"] = [
            {"word": w.word.strip(), "start": round(w.start, 3), "end": round(w.end, 3)}
            for s in segments
            for w in s.words
        ]
    body["usage"] = {"type": "duration", "seconds": round(duration)}
    return body


def _segment(s: Segment) -> dict:
    return {
        "id": s.id,
        "seek": round(s.start * 100),
        "start": s.start,
        "end": s.end,
        "text": s.text,
        "tokens": s.tokens,
        "temperature": s.temperature,
        "avg_logprob": s.avg_logprob,
        "compression_ratio": s.compression_ratio,
        "no_speech_prob": s.no_speech_prob,
    }
