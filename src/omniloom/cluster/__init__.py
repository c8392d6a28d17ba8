"""omniloom on Ray Serve (``omniloom serve --cluster``): the same API over separately scaled
encoder and LLM engine pools, with cache-aware routing between them."""
