"""HTTP serving: OpenAI-compatible routes, request conversion, SSE streaming, metrics, errors."""
