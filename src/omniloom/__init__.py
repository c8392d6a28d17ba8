"""omniloom: a self-hosted multimodal LLM server.

Every modality becomes tokens in one interleaved stream; encoders and projectors feed an LLM
backbone; the result is served behind an OpenAI-compatible API. See docs/architecture.md for the map.
"""

__version__ = "0.1.0"
