"""The engine: runs prompts through the model and streams tokens back. Token ids only."""
