"""The command line: ``tokens`` prints per-model counts and costs; ``chat`` answers offline."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from omniloom.cli import main
from omniloom.models.registry import default_tile_layout
from tests.conftest import png_bytes

TILE = default_tile_layout(224).length  # the shipped adapter's tokens per 224² tile


def test_tokens_prints_every_model(tmp_path, capsys):
    path = tmp_path / "wide.png"
    path.write_bytes(png_bytes(np.zeros((1080, 1920, 3), np.uint8)))
    assert main(["tokens", str(path), "--detail", "high"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[2:-1]}
    assert rows["gpt-4o"] == "1105"
    assert rows["omniloom-smol"] == str(3 + 3 * TILE + 2)  # a 2×1 grid and the thumbnail
    assert rows["claude-sonnet-4.5"] == "1590"
    assert rows["qwen2-vl-7b"] == "2691"
    assert {
        "gemini-2.5-pro",
        "internvl3-8b",
        "llama-3.2-11b-vision",
        "smolvlm-instruct",
    } <= rows.keys()
    assert "prices as of" in out


def test_tokens_low_detail(tmp_path, capsys):
    path = tmp_path / "sq.png"
    path.write_bytes(png_bytes(np.zeros((1024, 1024, 3), np.uint8)))
    main(["tokens", str(path), "--detail", "low"])
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[2:-1]}
    assert rows["gpt-4o"] == "85" and rows["omniloom-smol"] == str(2 + TILE)


def _chat(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "omniloom.cli", "chat", *args]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return run


@pytest.mark.slow
def test_chat_answers_once_without_server(tmp_path, astronaut_jpeg):
    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(astronaut_jpeg)
    text = _chat("What is the capital of France?", "--dtype", "float32", "--max-tokens", "16")
    assert "Paris" in text.stdout
    with_image = _chat("Describe this.", "--image", str(photo), "--max-tokens", "8")
    assert with_image.stdout.strip()


def test_eval_names_an_unknown_condition(capsys):
    assert main(["eval", "--conditions", "native,psychic"]) == 2
    err = capsys.readouterr().err
    assert "'psychic'" in err and "auto" in err


def test_tokens_counts_for_a_checkpoint_with_its_processor(tmp_path, capsys):
    from PIL import Image

    from tests.models.tiny_checkpoints import llama_base, qwen2_vl

    _, processor = qwen2_vl(tmp_path / "tiny-qwen2-vl")
    picture = np.random.default_rng(0).integers(0, 256, (100, 150, 3), dtype=np.uint8)
    path = tmp_path / "picture.png"
    path.write_bytes(png_bytes(picture))
    assert main(["tokens", str(path), "--model", str(tmp_path / "tiny-qwen2-vl")]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[2:-1]}
    grid = processor.image_processor(images=[Image.fromarray(picture)])["image_grid_thw"][0]
    assert rows["tiny-qwen2-vl"] == str(int(grid.prod()) // 4 + 2)  # the pads and their markers
    llama_base(tmp_path / "text-only")
    with pytest.raises(SystemExit, match="takes no images"):
        main(["tokens", str(path), "--model", str(tmp_path / "text-only")])


def test_tokens_for_a_video_uses_the_plan_and_per_second_prices(tmp_path, capsys):
    """An 11-second video with sound at the default 1 fps: 11 frames for omniloom and the
    frames-as-images rows, Gemini's 263 + 32 tokens a second, a tiny Qwen2-VL's own video
    span (6 frame pairs of 2×4 patches at low detail), and scene sampling as a bound."""
    from tests.media.video_files import Scene, make_video
    from tests.models.tiny_checkpoints import qwen2_vl

    path = tmp_path / "clip.mp4"
    scenes = [Scene((200, 0, 0), 5.0), Scene((0, 0, 200), 5.5)]
    path.write_bytes(make_video(scenes, size=(640, 360), audio=True))
    qwen2_vl(tmp_path / "tiny-qwen2-vl")
    assert main(["tokens", str(path), "--model", str(tmp_path / "tiny-qwen2-vl")]) == 0
    lines = capsys.readouterr().out.splitlines()[2:-1]
    rows = {line.split()[0]: line.split()[1] for line in lines}
    assert rows["omniloom-smol"] == str(11 * (2 + TILE))  # low detail: one tile a frame
    assert rows["gemini-2.5-flash"] == str(11 * (263 + 32))
    assert rows["gpt-4o"] == str(11 * 85)
    assert rows["tiny-qwen2-vl"] == str(6 * 2 * 4 // 4 + 2)
    main(["tokens", str(path), "--strategy", "scene", "--max-frames", "4"])
    assert "4 frames (scene, at most)" in capsys.readouterr().out


def test_tokens_answers_without_importing_torch(tmp_path):
    path = tmp_path / "wide.png"
    path.write_bytes(png_bytes(np.zeros((600, 800, 3), np.uint8)))
    code = (
        "import sys; from omniloom.cli import main; main(['tokens', sys.argv[1], '--detail', "
        "'high']); print('torch' in sys.modules)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60
    )
    assert run.stdout.strip().endswith("False"), run.stderr
    assert "800×600 → 2×2 tiles" in run.stdout


def test_version():
    run = subprocess.run(
        [sys.executable, "-m", "omniloom.cli", "--version"], capture_output=True, text=True
    )
    assert run.stdout.startswith("omniloom 0.")


@pytest.mark.slow
def test_chat_without_a_question_holds_a_conversation(tmp_path, astronaut_jpeg):
    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(astronaut_jpeg)
    lines = f"/image {tmp_path / 'missing.png'}\n/image {photo}\nWhat is this?\nThanks.\n/quit\n"
    command = [sys.executable, "-m", "omniloom.cli", "chat", "--max-tokens", "8"]
    run = subprocess.run(command, input=lines, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "no file" in run.stderr and f"attached {photo}" in run.stdout
    said = [line.removeprefix("> ") for line in run.stdout.splitlines() if line.startswith("> ")]
    answers = [line for line in said if line.strip() and not line.startswith(("attached", ">"))]
    assert len(answers) == 2  # one answer after each of the two messages
