"""A template vlmkit plugin: the ``v01-patch`` encoder and the ``v01-pool`` connector.

Nothing is registered here: vlmkit finds the components through the entry points in
``pyproject.toml`` and imports a module only when its component is used.
"""

__version__ = "0.1.0"
