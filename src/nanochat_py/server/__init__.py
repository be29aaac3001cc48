"""`nanochat-py serve`: a FastAPI chat service (web UI, nanochat's REST API, an OpenAI-compatible API)."""
