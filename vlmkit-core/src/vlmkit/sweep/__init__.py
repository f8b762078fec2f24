"""Sweeps: one recipe trained and evaluated over a grid of variants and seeds, then tabulated.

``grid`` expands ``--vary`` axes and seeds into variants; ``plan`` checks every variant before anything trains;
``runner`` runs them (one process each, resumable, N at a time on several GPUs); ``worker`` is that process;
``statistics``, ``results_table`` and ``plots`` turn the per-variant results into the table and the picture.
The sweep names no plugin: a variant is a recipe with ``--set`` overrides.
"""
