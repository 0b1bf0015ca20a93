"""Revisions: ``core_0001`` is the baseline; each package branches from it."""
