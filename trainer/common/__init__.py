"""What both training pipelines share: model loading, scoring, adapter artefacts, the lock, messages."""
