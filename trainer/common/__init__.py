"""What both training pipelines share: model loading, scoring, adapter artefacts, the lock (the
conversations as training sees them: service/store/preference.py)."""
