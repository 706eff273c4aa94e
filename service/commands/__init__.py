"""The command groups of `conscience`: the top layer (docs/architecture.md, Layers)."""
