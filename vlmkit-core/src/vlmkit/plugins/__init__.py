"""Who provides what: entry-point discovery (``registry``), pluggy hooks (``hooks``), component
arguments (``arguments``), presets and recipes by name (``presets``), strict loading (``strict``).

Imports no torch and no plugin. May import: ``vlmkit.errors``.
"""
