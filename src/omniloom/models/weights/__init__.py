"""Weight loaders: GGUF and Hugging Face safetensors into our modules' state dicts."""
