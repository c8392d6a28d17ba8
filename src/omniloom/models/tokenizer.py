"""Text tokenizer rebuilt from checkpoint metadata with the ``tokenizers`` library.

For GGUF byte-level BPE vocabularies we reproduce llama.cpp's pre-tokenizer for the named
``tokenizer.ggml.pre`` type (for ``smollm``: every digit on its own, then GPT-2's split), mark
control tokens as special, and decode with byte-level decoding. Token ids are the only thing
the engine sees.
"""

from __future__ import annotations

from functools import cached_property

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from omniloom.models.weights.checkpoint import TokenizerSpec

_DIGIT_SPLITTING_PRE = {"smollm", "starcoder"}


class TextTokenizer:
    def __init__(self, spec: TokenizerSpec):
        self.spec = spec
        self._tok = _build(spec)
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self.eos_id = spec.eos_id
        self.bos_id = spec.bos_id
        self.stop_ids = frozenset(
            i
            for i in (spec.eos_id, *spec.extra_eos_ids, self.token_id("<|im_end|>"))
            if i is not None
        )

    def encode(self, text: str) -> list[int]:
        """Token ids for ``text``; special tokens written literally are recognised."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_prompt(self, text: str) -> list[int]:
        """A raw prompt's ids with the checkpoint's own additions (its BOS where it adds one)."""
        ids = self._tok.encode(text, add_special_tokens=True).ids
        bos = self.bos_id
        if self.spec.add_bos and bos is not None and ids[:1] != [bos]:
            ids.insert(0, bos)
        return ids

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        return self._tok.decode(ids, skip_special_tokens=skip_special)

    def token_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(token_id)

    @cached_property
    def max_token_bytes(self) -> int | None:
        """An upper bound on the UTF-8 bytes of text one token stands for (its longest token,
        as written in the vocabulary or decoded, plus one for a leading space), so that text of
        B bytes needs at least B / this many tokens. None where an unknown-token id could stand
        for any run of text (no byte fallback), which makes no such bound."""
        model = self._tok.model
        if getattr(model, "unk_token", None) and not getattr(model, "byte_fallback", False):
            return None
        longest = max(
            max(len(token.encode()), len(self._tok.decode([i]).encode()))
            for i, token in enumerate(self.vocab_list())
        )
        return longest + 1

    def vocab_list(self) -> list[str]:
        """Token strings by id (byte-level encoded), as grammar engines want them."""
        return [self._tok.id_to_token(i) or "" for i in range(self.vocab_size)]


def _build(spec: TokenizerSpec) -> Tokenizer:
    if spec.kind == "tokenizer.json":
        return Tokenizer.from_str(spec.tokenizer_json)
    vocab = {tok: i for i, tok in enumerate(spec.tokens)}
    merges = [tuple(m.split(" ", 1)) for m in spec.merges]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if spec.pre_tokenizer in _DIGIT_SPLITTING_PRE:
        digits = pre_tokenizers.Digits(individual_digits=True)
        tok.pre_tokenizer = pre_tokenizers.Sequence([digits, byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(spec.tokens[i], special=True) for i in spec.special_ids])
    return tok
