"""Adapters that let other tools drive vlmkit models (each imports its tool; nothing here is imported by vlmkit)."""
