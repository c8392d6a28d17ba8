"""Video in chat, end to end on the real server with the official openai client: a generated
three-scene video as a data URL, sampled per request, its frames' spans counted as
``video_tokens`` (equal in ``/tokenize``), timestamps in the prompt; a local file by
``file://`` inside the media directory; refusals with 400s that say why, and the server serving
on."""

from __future__ import annotations

import base64

import httpx
import openai
import pytest
from gguf import GGUFReader

from omniloom.models.specs.omniloom_smol import smollm2_gguf_path
from omniloom.models.tokenizer import TextTokenizer
from omniloom.models.weights.gguf_loader import read_tokenizer
from tests.conftest import start_server
from tests.media.video_files import Scene, make_video

pytestmark = pytest.mark.slow
MODEL = "omniloom-smol"
SCENES = [Scene((200, 0, 0), 2.0), Scene((0, 160, 0), 2.0, moving=False), Scene((0, 0, 200), 2.0)]


@pytest.fixture(scope="module")
def video_bytes() -> bytes:
    return make_video(SCENES)


@pytest.fixture(scope="module")
def media_server(tmp_path_factory, video_bytes):
    media = tmp_path_factory.mktemp("media")
    (media / "scenes.mp4").write_bytes(video_bytes)
    env = {"OMNILOOM_LIMITS_LOCAL_MEDIA_DIR": str(media)}
    server = start_server(tmp_path_factory.mktemp("log") / "server.log", env=env)
    try:
        yield server, media
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)


def _video_part(url: str, **options) -> dict:
    part = {"type": "video_url", "video_url": {"url": url}}
    return part | ({"video": options} if options else {})


def _messages(part: dict, question: str = "What colour appears after the cut?") -> list:
    return [{"role": "user", "content": [part, {"type": "text", "text": question}]}]


def _data_url(data: bytes) -> str:
    return "data:video/mp4;base64," + base64.b64encode(data).decode()


def test_a_video_is_answered_with_its_frames_counted(media_server, video_bytes):
    server, _ = media_server
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    part = _video_part(_data_url(video_bytes), strategy="scene", max_frames=4)
    reply = client.chat.completions.create(
        model=MODEL, messages=_messages(part), max_tokens=8, temperature=0
    )
    usage = reply.model_dump()["usage"]["prompt_tokens_details"]
    counted = httpx.post(
        f"{server.url}/tokenize", json={"model": MODEL, "messages": _messages(part)}
    ).json()
    frames = [m for m in counted["media"] if m["modality"] == "video"]
    assert len(frames) == 3  # one per scene
    assert usage["video_tokens"] == sum(f["tokens"] for f in frames) > 0
    assert counted["count"] == reply.usage.prompt_tokens
    assert usage["image_tokens"] == 0


def test_frames_carry_their_timestamps_into_the_prompt(media_server, video_bytes):
    server, _ = media_server
    part = _video_part(_data_url(video_bytes), strategy="uniform", fps=0.5)
    counted = httpx.post(
        f"{server.url}/tokenize", json={"model": MODEL, "messages": _messages(part)}
    ).json()
    assert [m["modality"] for m in counted["media"]].count("video") == 3  # 0, 2 and 4 s
    tokenizer = TextTokenizer(read_tokenizer(GGUFReader(str(smollm2_gguf_path()))))
    text_ids = [t for t in counted["tokens"] if t < tokenizer.vocab_size]
    prompt = tokenizer.decode(text_ids, skip_special=False)
    assert "Video, 6.0 s, 3 frames:" in prompt
    assert all(f"At {t}.0 s: " in prompt for t in (0, 2, 4))


def test_a_local_file_in_the_media_directory(media_server):
    server, media = media_server
    part = _video_part((media / "scenes.mp4").as_uri(), strategy="keyframes", max_frames=2)
    counted = httpx.post(
        f"{server.url}/tokenize", json={"model": MODEL, "messages": _messages(part)}
    ).json()
    assert [m["modality"] for m in counted["media"]] == ["video", "video"]


@pytest.mark.parametrize(
    ("url", "options", "words"),
    [
        ("data:video/mp4;base64," + base64.b64encode(b"\x00junk" * 300).decode(), {}, "could not"),
        ("file:///etc/passwd", {}, "local media directory"),
        ("http://127.0.0.1/video.mp4", {}, "127.0.0.1"),
        (None, {"strategy": "every-frame"}, "strategy"),
        (None, {"max_frames": 100000}, "max_frames"),
        (None, {"audio": True}, "not supported yet"),
    ],
)
def test_bad_videos_get_a_clear_400_and_the_server_serves_on(
    media_server, video_bytes, url, options, words
):
    server, _ = media_server
    part = _video_part(url or _data_url(video_bytes), **options)
    refused = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": MODEL, "messages": _messages(part), "max_tokens": 2},
    )
    assert refused.status_code == 400, refused.text
    assert words in refused.text
    ok = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    )
    assert ok.status_code == 200
