"""Text tokenizer rebuilt from checkpoint metadata with the ``tokenizers`` library.

For GGUF byte-level BPE vocabularies we reproduce llama.cpp's pre-tokenizer for the named
``tokenizer.ggml.pre`` type (for ``smollm``: every digit on its own, then GPT-2's split; for
``qwen2`` and ``llama-bpe``: their own split expressions, as their ``tokenizer.json`` carries
them), mark control tokens as special, and decode with byte-level decoding. Token ids are the
only thing the engine sees.
"""

from __future__ import annotations

from functools import cached_property

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

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
    if spec.kind == "spm":
        return _sentencepiece(spec)
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


class TokenType:
    """GGUF's token types (SentencePiece's piece types)."""

    NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


_WORD_MARK = "\u2581"  # SentencePiece's "▁": a space


def sentencepiece_merges(tokens: list[str], scores: list[float], types: list[int]) -> list:
    """BPE merges that reproduce SentencePiece's BPE (and llama.cpp's "llama" tokenizer): two
    adjacent pieces merge when their concatenation is a piece, the highest-scoring result
    first. Each split of each normal piece into two pieces is a merge, ranked by the score of
    the piece it makes (then by the ids of its halves, as ``transformers`` orders them)."""
    ids = {token: i for i, token in reversed(list(enumerate(tokens)))}
    ranked = []
    for i, piece in enumerate(tokens):
        if types[i] != TokenType.NORMAL:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in ids and right in ids:
                ranked.append((-scores[i], ids[left], ids[right], left, right))
    ranked.sort(key=lambda merge: merge[:3])
    return [(left, right) for *_, left, right in ranked]


def _sentencepiece(spec: TokenizerSpec) -> Tokenizer:
    """A SentencePiece BPE vocabulary (GGUF ``llama`` tokenizer model) as llama.cpp tokenizes
    it: spaces become "▁" (and one goes before each text fragment where the model adds a space
    prefix), pieces merge by score, characters outside the vocabulary fall back to their
    bytes. Control tokens are special; user-defined ones are matched as written."""
    types = spec.token_types
    vocab = {token: i for i, token in reversed(list(enumerate(spec.tokens)))}
    merges = sentencepiece_merges(spec.tokens, spec.scores, types)
    unknown = next((spec.tokens[i] for i, k in enumerate(types) if k == TokenType.UNKNOWN), None)
    bpe = models.BPE(vocab=vocab, merges=merges, unk_token=unknown, byte_fallback=True)
    tok = Tokenizer(bpe)
    steps = [normalizers.Replace(" ", _WORD_MARK)]
    decoding = [decoders.Replace(_WORD_MARK, " "), decoders.ByteFallback(), decoders.Fuse()]
    if spec.add_space_prefix:
        steps.insert(0, normalizers.Prepend(_WORD_MARK))
        decoding.append(decoders.Strip(" ", 1, 0))
    tok.normalizer = normalizers.Sequence(steps)
    tok.decoder = decoders.Sequence(decoding)
    tok.add_special_tokens([AddedToken(spec.tokens[i], special=True) for i in spec.special_ids])
    literal = [i for i, kind in enumerate(types) if kind == TokenType.USER_DEFINED]
    tok.add_tokens([AddedToken(spec.tokens[i], normalized=False) for i in literal])
    return tok
