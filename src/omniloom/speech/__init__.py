"""Speech in and out: transcription (faster-whisper) and synthesis (Piper), with the names
OpenAI's audio API uses for its models and voices."""
