"""Incremental detokenization with stop strings.

Text is released only when it is complete UTF-8 and cannot be the start of a stop string, so a
stream never shows half a character or the beginning of a stop sequence it later retracts.
"""

from __future__ import annotations

from typing import Protocol


class Decoder(Protocol):
    def decode(self, ids: list[int], skip_special: bool = True) -> str: ...


class IncrementalDetokenizer:
    def __init__(self, decoder: Decoder, stop: tuple[str, ...] = ()):
        self.decoder = decoder
        self.stop = tuple(s for s in stop if s)
        self.ids: list[int] = []
        self._prefix = 0
        self._read = 0
        self.text = ""  # all decoded text so far
        self.released = 0  # how much of ``text`` was handed out
        self.stopped = False

    def _decode_new(self) -> str:
        prefix_text = self.decoder.decode(self.ids[self._prefix : self._read])
        full = self.decoder.decode(self.ids[self._prefix :])
        if len(full) <= len(prefix_text) or full.endswith("\ufffd"):
            return ""
        self._prefix, self._read = self._read, len(self.ids)
        return full[len(prefix_text) :]

    def push(self, token_id: int) -> str:
        """Add one token; return the text that may now be shown (possibly empty)."""
        self.ids.append(token_id)
        self.text += self._decode_new()
        for s in self.stop:
            at = self.text.find(s, max(0, self.released - len(s)))
            if at != -1:
                self.text = self.text[:at]
                self.stopped = True
                return self._release(len(self.text))
        return self._release(len(self.text) - self._held_back())

    def _held_back(self) -> int:
        """Length of the longest tail of ``text`` that begins some stop string."""
        longest = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(self.text)), longest, -1):
                if self.text.endswith(s[:k]):
                    longest = k
                    break
        return longest

    def flush(self) -> str:
        """At the end of generation: release whatever was held back, partial characters too."""
        if not self.stopped and self._read < len(self.ids):
            prefix_text = self.decoder.decode(self.ids[self._prefix : self._read])
            self.text += self.decoder.decode(self.ids[self._prefix :])[len(prefix_text) :]
            self._prefix = self._read = len(self.ids)
        return self._release(len(self.text))

    def _release(self, upto: int) -> str:
        upto = max(upto, self.released)
        out = self.text[self.released : upto]
        self.released = upto
        return out
