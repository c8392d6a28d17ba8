"""``omniloom serve --model DIR`` on checkpoints of other families, end to end: a tiny
Qwen2-VL, a tiny SmolVLM (list-content chat template, tiled images), a tiny LLaVA (the
tokenizer's BOS before the template's text) and a tiny LLaVA-OneVision (anyres grid) answer the
official openai client exactly as ``transformers`` generates, at every ``detail``, with usage
and ``/tokenize`` equal to the processor's count; a tiny Qwen2-Audio hears ``input_audio``
natively, its audio tokens predicted from the duration; ``/v1/completions`` on raw text; a text-only
base model refuses chat (no template) and images (no encoder) with 400s that say why, and
``--max-model-len`` caps its context."""

from __future__ import annotations

import httpx
import numpy as np
import openai
import pytest
import torch
from transformers.processing_utils import ProcessorMixin

from tests.conftest import data_url, png_bytes, start_server
from tests.models.tiny_checkpoints import (
    idefics3,
    llama_base,
    llava,
    llava_onevision,
    qwen2_audio,
    qwen2_vl,
)
from tests.speech.audio_files import audio_file, tone

pytestmark = pytest.mark.slow
QUESTION = "What is in this picture?"


def _serving(tmp_path_factory, name: str, build, *options: str):
    """A server (with ``options``) on the checkpoint ``build(directory)`` writes to a folder
    called ``name``; yields (server, what ``build`` returned)."""
    directory = tmp_path_factory.mktemp("ckpt") / name
    built = build(directory)
    log = tmp_path_factory.mktemp("log") / "server.log"
    server = start_server(log, "--model", str(directory), *options)
    try:
        yield server, built
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    for server, (reference, processor) in _serving(tmp_path_factory, "tiny-qwen2-vl", qwen2_vl):
        yield server, reference, processor


@pytest.fixture(scope="module")
def smolvlm(tmp_path_factory):
    build = lambda d: idefics3(d, family="smolvlm")  # noqa: E731
    for server, (reference, processor) in _serving(tmp_path_factory, "tiny-smolvlm", build):
        yield server, reference, processor


@pytest.fixture(scope="module")
def llava_server(tmp_path_factory):
    for server, (reference, processor) in _serving(tmp_path_factory, "tiny-llava", llava):
        yield server, reference, processor


@pytest.fixture(scope="module")
def onevision_server(tmp_path_factory):
    for server, built in _serving(tmp_path_factory, "tiny-llava-onevision", llava_onevision):
        yield server, *built


def _picture() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (120, 170, 3), dtype=np.uint8)


def _reference(reference, processor, messages, images, tokens: int, **images_kwargs):
    # SmolVLM's override only adds its video processor's defaults (torchvision, not installed)
    render = ProcessorMixin.apply_chat_template
    text = render(processor, messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=images, return_tensors="pt", **images_kwargs)
    with torch.inference_mode():
        out = reference.generate(**inputs, max_new_tokens=tokens, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1] :]
    return processor.tokenizer.decode(new, skip_special_tokens=True), inputs["input_ids"].shape[1]


FAMILIES_BY_DETAIL = [  # transformers has no one-image form of OneVision's low (one view)
    (family, detail)
    for family in ("qwen", "smolvlm", "llava_server", "onevision_server")
    for detail in ("auto", "low", "high")
    if (family, detail) != ("onevision_server", "low")
]


@pytest.mark.parametrize(("family", "detail"), FAMILIES_BY_DETAIL)
def test_openai_client_gets_what_transformers_generates(request, family, detail):
    server, reference, processor = request.getfixturevalue(family)
    name = f"tiny-{reference.config.model_type.replace('_', '-')}"
    # Qwen2-VL's pixel cap is above this picture at every detail; SmolVLM's low is one view
    splitting = {"do_image_splitting": False} if family == "smolvlm" and detail == "low" else {}
    from PIL import Image

    url = data_url(png_bytes(_picture()), "image/png")
    content = [
        {"type": "image_url", "image_url": {"url": url, "detail": detail}},
        {"type": "text", "text": QUESTION},
    ]
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(
        model=name,
        messages=[{"role": "user", "content": content}],
        max_tokens=12,
        temperature=0,
    )
    ref_messages = [{"role": "user", "content": [{"type": "image"}, content[1]]}]
    expected, prompt_len = _reference(
        reference, processor, ref_messages, [Image.fromarray(_picture())], 12, **splitting
    )
    assert reply.choices[0].message.content == expected
    assert reply.usage.prompt_tokens == prompt_len
    assert reply.model_dump()["usage"]["prompt_tokens_details"]["image_tokens"] > 0
    counted = httpx.post(
        f"{server.url}/tokenize",
        json={"model": name, "messages": [{"role": "user", "content": content}]},
    ).json()
    assert counted["count"] == prompt_len


def test_onevision_sends_each_of_several_images_as_one_view(onevision_server):
    server, reference, processor = onevision_server
    from PIL import Image

    pictures = [_picture(), _picture()[:60]]
    content = [
        {"type": "image_url", "image_url": {"url": data_url(png_bytes(p), "image/png")}}
        for p in pictures
    ]
    content.append({"type": "text", "text": QUESTION})
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(
        model="tiny-llava-onevision",
        messages=[{"role": "user", "content": content}],
        max_tokens=12,
        temperature=0,
    )
    ref_content = [{"type": "image"}, {"type": "image"}, content[-1]]
    images = [[Image.fromarray(p) for p in pictures]]  # one sample holding both
    expected, prompt_len = _reference(
        reference, processor, [{"role": "user", "content": ref_content}], images, 12
    )
    assert reply.choices[0].message.content == expected
    assert reply.usage.prompt_tokens == prompt_len
    assert reply.model_dump()["usage"]["prompt_tokens_details"]["image_tokens"] == 2 * (16 + 1)


def test_models_card_reports_what_the_checkpoint_is(qwen):
    server, reference, _ = qwen
    card = httpx.get(f"{server.url}/v1/models").json()["data"][0]
    assert card["id"] == "tiny-qwen2-vl" and card["family"] == "qwen2-vl"
    assert card["input_modalities"] == ["text", "image", "video"]
    assert card["max_model_len"] == reference.config.text_config.max_position_embeddings


def test_text_completion_and_cascade_refusal(qwen):
    server, reference, processor = qwen
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    prompt = "The quick brown fox"
    done = client.completions.create(
        model="tiny-qwen2-vl", prompt=prompt, max_tokens=8, temperature=0, logprobs=2
    )
    ids = processor.tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = reference.generate(input_ids=ids, max_new_tokens=8, do_sample=False)
    new = out[0, ids.shape[1] :]
    assert done.choices[0].text == processor.tokenizer.decode(new, skip_special_tokens=True)
    assert len(done.choices[0].logprobs.token_logprobs) == done.usage.completion_tokens
    for chosen, top in zip(
        done.choices[0].logprobs.token_logprobs, done.choices[0].logprobs.top_logprobs, strict=True
    ):  # keyed by text: two tokens that decode alike share one key
        assert 1 <= len(top) <= 2 and max(top.values()) >= chosen - 1e-6
    echoed = client.completions.create(
        model="tiny-qwen2-vl", prompt=prompt, max_tokens=8, temperature=0, echo=True
    )
    assert echoed.choices[0].text == prompt + done.choices[0].text
    refused = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={
            "model": "tiny-qwen2-vl",
            "messages": [{"role": "user", "content": "hi"}],
            "perception": "cascade",
        },
    )
    assert refused.status_code == 400 and "cascade" in refused.json()["error"]["message"]


@pytest.fixture(scope="module")
def base_llama(tmp_path_factory):
    options = ("--max-model-len", "64")
    for server, _ in _serving(tmp_path_factory, "tiny-llama-base", llama_base, *options):
        yield server


def test_base_model_refuses_chat_and_images_saying_why(base_llama):
    url = f"{base_llama.url}/v1/chat/completions"
    chat = httpx.post(
        url, json={"model": "tiny-llama-base", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert chat.status_code == 400
    assert "no chat template" in chat.json()["error"]["message"]
    image = {
        "type": "image_url",
        "image_url": {"url": data_url(png_bytes(_picture()), "image/png")},
    }
    with_image = httpx.post(
        url, json={"model": "tiny-llama-base", "messages": [{"role": "user", "content": [image]}]}
    )
    assert with_image.status_code == 400
    message = with_image.json()["error"]["message"]
    assert "image" in message and "tiny-llama-base" in message
    text = httpx.post(
        f"{base_llama.url}/v1/completions",
        json={"model": "tiny-llama-base", "prompt": "The quick", "max_tokens": 4},
    )
    assert text.status_code == 200 and text.json()["usage"]["completion_tokens"] >= 1
    assert httpx.get(f"{base_llama.url}/v1/models").json()["data"][0]["max_model_len"] == 64
    too_long = httpx.post(
        f"{base_llama.url}/v1/completions",
        json={"model": "tiny-llama-base", "prompt": "The quick brown fox " * 20, "max_tokens": 4},
    )
    assert too_long.status_code == 400 and "64" in too_long.json()["error"]["message"]
    assert httpx.get(f"{base_llama.url}/health").status_code == 200


@pytest.fixture(scope="module")
def qwen2_audio_server(tmp_path_factory):
    for server, built in _serving(tmp_path_factory, "tiny-qwen2-audio", qwen2_audio):
        yield server, *built


def _clip() -> np.ndarray:
    return tone(1.7, hz=220.0)


def test_qwen2_audio_hears_input_audio_natively(qwen2_audio_server):
    import base64

    server, reference, processor = qwen2_audio_server
    wav = base64.b64encode(audio_file(_clip(), 16_000, "wav")).decode()
    content = [
        {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}},
        {"type": "text", "text": QUESTION},
    ]
    messages = [{"role": "user", "content": content}]
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(
        model="tiny-qwen2-audio", messages=messages, max_tokens=12, temperature=0
    )
    ref_content = [{"type": "audio", "audio_url": "clip"}, content[1]]
    text = processor.apply_chat_template(
        [{"role": "user", "content": ref_content}], add_generation_prompt=True, tokenize=False
    )
    inputs = processor(text=[text], audio=[_clip()], sampling_rate=16_000, return_tensors="pt")
    with torch.inference_mode():
        out = reference.generate(**inputs, max_new_tokens=12, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1] :]
    assert reply.choices[0].message.content == processor.tokenizer.decode(
        new, skip_special_tokens=True
    )
    assert reply.usage.prompt_tokens == inputs["input_ids"].shape[1]
    body = reply.model_dump()
    assert body["usage"]["prompt_tokens_details"]["audio_tokens"] == 42 + 2  # 25/s, bos, eos
    assert body["audio_perception"] == "native"
    counted = httpx.post(
        f"{server.url}/tokenize", json={"model": "tiny-qwen2-audio", "messages": messages}
    ).json()
    assert counted["count"] == reply.usage.prompt_tokens
    assert counted["media"][0]["modality"] == "audio"
    card = httpx.get(f"{server.url}/v1/models").json()["data"][0]
    assert card["input_modalities"] == ["text", "audio"]
    assert card["audio_perception"] == "native"


def test_qwen2_audio_refuses_images_and_hears_through_the_cascade_when_asked(
    qwen2_audio_server,
):
    import base64

    server, _, _ = qwen2_audio_server
    url = f"{server.url}/v1/chat/completions"
    image = {
        "type": "image_url",
        "image_url": {"url": data_url(png_bytes(_picture()), "image/png")},
    }
    refused = httpx.post(
        url, json={"model": "tiny-qwen2-audio", "messages": [{"role": "user", "content": [image]}]}
    )
    assert refused.status_code == 400
    assert "image" in refused.json()["error"]["message"]
    wav = base64.b64encode(audio_file(_clip(), 16_000, "wav")).decode()
    part = {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}}
    heard = httpx.post(
        url,
        json={
            "model": "tiny-qwen2-audio",
            "messages": [{"role": "user", "content": [part]}],
            "audio_perception": "cascade",
            "max_tokens": 2,
        },
        timeout=120,
    ).json()
    assert heard["audio_perception"] == "cascade"
    assert heard["usage"]["prompt_tokens_details"]["audio_tokens"] == 0
