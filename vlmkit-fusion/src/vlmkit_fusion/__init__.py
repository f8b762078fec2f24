"""Connectors and fusion modules for vlmkit, registered as ``vlmkit.connectors`` entry points."""
