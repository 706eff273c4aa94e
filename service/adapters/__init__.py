"""The adapter-version owner: the registry, publishing, and the one door operators use (CLI and HTTP)."""
