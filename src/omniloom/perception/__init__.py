"""The perception cascade: text read from media (OCR, encoder class labels) for the prompt."""
