"""Training glue around transformers' Trainer: recipes, stages, parameter groups, multi-loss logging."""
