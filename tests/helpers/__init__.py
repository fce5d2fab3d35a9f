"""Helpers that several test modules share (models, inputs, counts)."""
