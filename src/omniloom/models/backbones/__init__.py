"""LLM backbones: decoder-only transformers that consume embeddings and return logits."""
