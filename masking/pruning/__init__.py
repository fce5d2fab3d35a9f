"""Pruning with learned Hadamard masks: parametrizations, estimators, schedules, compaction, export."""
