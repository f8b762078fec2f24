"""Other systems' checkpoints in and out.

``weights`` reads foreign weight files (safetensors, weight-only pickles); ``fill`` copies them into a
built vlmkit model or names what does not fit; ``tokenizer_files`` takes a release's tokenizer as its
files alone; ``formats`` is the contract through which plugins add checkpoint formats, ``catalogue``
lists the installed ones, detects and converts; ``builtin_formats`` are core's: transformers' Llava and
VipLlava (``hf_llava``) and the LLaVA codebase and its forks (``llava_repo``), whose towers and
projectors are converted by the plugins that own them (the contracts in ``llava_conversion``).

May import: ``vlmkit.errors``, ``vlmkit.progress``, ``vlmkit.plugins``, ``vlmkit.model``.
"""
