"""Other systems' checkpoints in and out: weight files, the formats contract, and core's own formats.

``weights`` reads foreign weight files (safetensors, weight-only pickles); ``fill`` copies them into a
built vlmkit model or names what does not fit; ``formats`` is the contract through which plugins add
checkpoint formats to ``vlmkit import`` / ``export`` / ``formats``; ``llava_repo`` converts checkpoints
saved by the LLaVA codebase and its forks, with parts converted by the plugins that own them.
"""
