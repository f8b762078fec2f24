"""Training glue around transformers' Trainer: recipes and stages (``recipe``), the data a stage reads
(``data``), LoRA, activation checkpointing, resuming, DeepSpeed, the loss-curve picture,
and the run itself (``runner``).

May import: ``vlmkit.errors``, ``vlmkit.progress``, ``vlmkit.plugins``, ``vlmkit.model``, ``vlmkit.data``.
"""
