"""Training, evaluation and export of CCNet models on real datasets (see docs/TRAINING.md)."""
