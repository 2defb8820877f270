"""Fitting lenses: the tuned lens (resumable training)."""
