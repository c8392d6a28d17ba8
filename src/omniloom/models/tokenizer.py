"""Text tokenizer rebuilt from checkpoint metadata with the ``tokenizers`` library.

For GGUF byte-level BPE vocabularies we reproduce llama.cpp's pre-tokenizer for the named
``tokenizer.ggml.pre`` type (for ``smollm``: every digit on its own, then GPT-2's split; for
``qwen2`` and ``llama-bpe``: their own split expressions, as their ``tokenizer.json`` carries
them), mark control tokens as special, and decode with byte-level decoding. Token ids are the
only thing the engine sees.
"""

from __future__ import annotations

from functools import cached_property

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

from omniloom.models.weights.checkpoint import TokenizerSpec

_DIGIT_SPLITTING_PRE = {"smollm", "starcoder"}
_CONTRACTIONS_AND_WORDS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
_PUNCTUATION_AND_SPACE = r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
SPLIT_PATTERNS = {  # llama.cpp's pre-tokenizer types that split by their own expression
    "qwen2": _CONTRACTIONS_AND_WORDS + r"\p{N}|" + _PUNCTUATION_AND_SPACE,
    "llama-bpe": _CONTRACTIONS_AND_WORDS + r"\p{N}{1,3}|" + _PUNCTUATION_AND_SPACE,
}


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

    def encode_after_special(self, text: str) -> list[int]:
        """Ids of ``text`` that follows a special token in a prompt, as one pass over the whole
        prompt gives them: a SentencePiece-style tokenizer (Llama 2's, LLaVA-1.5's) puts its
        word marker before the prompt's first word only, not after a special token."""
        anchor = self._special_anchor
        if anchor is None:
            return self.encode(text)
        return self._tok.encode(anchor[0] + text, add_special_tokens=False).ids[1:]

    @cached_property
    def _special_anchor(self) -> tuple[str, int] | None:
        """One special token (text, id) to tokenize continuations after."""
        for token_id, token in sorted(self._tok.get_added_tokens_decoder().items()):
            if token.special:
                return token.content, token_id
        return None

    def encode_prompt(self, text: str) -> list[int]:
        """A raw prompt's ids with the checkpoint's own additions (its BOS where it adds one)."""
        ids = self._tok.encode(text, add_special_tokens=True).ids
        bos = self.bos_id
        if self.spec.add_bos and bos is not None and ids[:1] != [bos]:
            ids.insert(0, bos)
        return ids

    def added_prefix_ids(self) -> list[int]:
        """What the tokenizer puts before text when it adds its special tokens (a BOS for
        Llama's and LLaVA's tokenizers; nothing for Qwen's)."""
        plain = self._tok.encode("a", add_special_tokens=False).ids
        full = self._tok.encode("a", add_special_tokens=True).ids
        for start in range(len(full) - len(plain) + 1):
            if full[start : start + len(plain)] == plain:
                return full[:start]
        return []

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
    tok.pre_tokenizer = _pre_tokenizer(spec.pre_tokenizer)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(spec.tokens[i], special=True) for i in spec.special_ids])
    return tok


def _pre_tokenizer(pre: str):
    """llama.cpp's pre-tokenizer type ``pre`` as a ``tokenizers`` pre-tokenizer."""
    if pre in SPLIT_PATTERNS:
        split = pre_tokenizers.Split(Regex(SPLIT_PATTERNS[pre]), behavior="isolated")
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        return pre_tokenizers.Sequence([split, byte_level])
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in _DIGIT_SPLITTING_PRE:
        digits = pre_tokenizers.Digits(individual_digits=True)
        return pre_tokenizers.Sequence([digits, byte_level])
    return byte_level
