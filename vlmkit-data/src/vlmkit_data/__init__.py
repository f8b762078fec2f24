"""Datasets for vlmkit. Each is registered as a ``vlmkit.datasets`` entry point.

Importing this package imports nothing heavy; the modules are loaded when a dataset is used.
"""
