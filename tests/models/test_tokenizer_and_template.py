"""Tokenizer and chat template rebuilt from GGUF metadata agree with transformers."""

from __future__ import annotations

import random

import pytest
from gguf import GGUFReader

from omniloom.models.registry import smollm2_gguf_path
from omniloom.models.tokenizer import TextTokenizer
from omniloom.models.weights.gguf_loader import read_tokenizer
from omniloom.processing.template import ChatTemplate
from tests.models.tiny_checkpoints import _CORPUS, sentencepiece_gguf, sentencepiece_vocabulary

TEXTS = [
    "Hello world!",
    "The year 2024 cost $1,234.56 — or 3.14159e-10?",
    "naïve café, 東京, Ελληνικά, 🚀👍🏽",
    "<|im_start|>user\nhi<|im_end|>\n",
    "  leading  spaces\n\n\ttabs\r\n",
    "def f(x):\n    return x**2  # 1234567890",
    "I'm sure we'll see they've",
    "",
]


@pytest.fixture(scope="module")
def hf_tokenizer():
    from transformers import AutoTokenizer

    path = smollm2_gguf_path()
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


@pytest.mark.slow
@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_matches_transformers(hf_tokenizer, default_model, text):
    ours = default_model.tokenizer
    assert ours.encode(text) == hf_tokenizer.encode(text, add_special_tokens=False)
    assert ours.decode(ours.encode(text), skip_special=False) == text


CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Ünïcödé and {{ braces }}"},
    ],
]


@pytest.mark.slow
@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_template_matches_transformers(
    hf_tokenizer, default_model, messages, add_generation_prompt
):
    expected = hf_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    assert default_model.template.render(messages, add_generation_prompt) == expected


RICH_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m.role == 'tool' %}{% continue %}{% endif %}"
    "{{ m.role | upper }}: {{ m.content | tojson }}\n{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def test_template_helpers_match_transformers():
    from transformers.utils.chat_template_utils import render_jinja_template

    messages = [
        {"role": "user", "content": 'quote " and <html> & ü'},
        {"role": "tool", "content": "hidden"},
    ]
    ours = ChatTemplate(RICH_TEMPLATE, bos_token="<s>").render(messages)
    theirs, _ = render_jinja_template(
        conversations=[messages],
        chat_template=RICH_TEMPLATE,
        add_generation_prompt=True,
        bos_token="<s>",
    )
    assert ours == theirs[0]


@pytest.mark.parametrize("space_prefix", [False, True], ids=["gemma", "llama2"])
def test_gguf_sentencepiece_vocabulary_tokenizes_as_sentencepiece(tmp_path, space_prefix):
    """A GGUF ``llama`` vocabulary (pieces, scores, types) against SentencePiece itself."""
    turns = ("<start_of_turn>", "<end_of_turn>")
    vocabulary = sentencepiece_vocabulary(turns, space_prefix)
    path = sentencepiece_gguf(tmp_path / "vocabulary.gguf", vocabulary, control=turns)
    ours = TextTokenizer(read_tokenizer(GGUFReader(str(path))))
    rng = random.Random(0)
    alphabet = sorted(set(_CORPUS)) + list("éü日🙂\t")
    words = _CORPUS.split()
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(500)]
    texts += [" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(500)]
    for text in texts:
        ids = ours.encode(text)
        assert ids == vocabulary.encode(text), text
        assert ours.decode(ids) == text
    assert ours.encode("<end_of_turn>") == [vocabulary.PieceToId("<end_of_turn>")]
