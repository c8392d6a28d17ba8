"""Training the vision adapter: LLaVA-style stage 1 (projector alignment) and stage 2 (instruction tuning)."""
