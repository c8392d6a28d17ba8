"""Native against cascade audio for the embedded model, on held-out speech.

The installed model (omniloom-smol with its audio adapter) hears each clip two ways: natively
(Whisper tiny.en's encoder → the trained projector → the LLM) and through the cascade (Whisper
tiny.en's transcript as text). Two tasks, in two voices (espeak-ng's en-us, which training never
used, and the Piper voice): transcription of the 12 held-out sentences ("Transcribe the audio.";
word error rate against the text) and the 6 held-out spoken questions (right when the answer
holds an expected word). Both paths run the same LLM greedily in the engine. Prints a table and
writes ``benchmarks/results/native_audio.json``.

Usage: ``.venv/bin/python benchmarks/native_audio.py``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from serving import cpu_name

from omniloom.models.registry import load_model
from omniloom.speech.asr import Transcriber
from omniloom.speech.tts import Synthesizer
from omniloom.training.audio import evaluate

RESULTS = Path(__file__).parent / "results" / "native_audio.json"


def print_table(result: dict, cpu: str) -> None:
    print(f"{cpu}; omniloom-smol fp32, Whisper tiny.en")
    print(f"{'voice':<12}{'path':<9}{'WER':>7}{'questions':>11}")
    for voice, row in result.items():
        if not isinstance(row, dict):
            continue
        for path in ("native", "cascade"):
            right = f"{row[f'questions_{path}']}/{row['questions']}"
            print(f"{voice:<12}{path:<9}{row[f'wer_{path}']:>7.1%}{right:>11}")
    print(f"native wins: {result['native_wins']}")


def main() -> int:
    model = load_model(dtype="float32")
    if "audio" not in model.processors:
        print("the installed model has no audio adapter (omniloom train-audio --install)")
        return 1
    result = evaluate(model, Synthesizer(), Transcriber())
    print_table(result, cpu_name())
    RESULTS.write_text(json.dumps({"cpu": cpu_name(), **result}, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
