"""The bottom layer: what every layer may use (docs/architecture.md, Layers)."""
