"""Model code: backbones (LLM decoders), encoders, projectors, weight loaders and the VLM that joins them."""
