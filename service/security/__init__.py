"""Client API keys (generation, hashing, the in-memory cache) and the FastAPI auth dependencies."""
