"""Building and running a model: the contracts components implement (``contracts``), the config
(``config``), assembly from plugins (``assembly``), the model itself (``vlm``), splicing visual tokens
into the text (``splice``, ``packed_rows``), the LLM adapter (``llm``), the LM objective, parameter
selectors (``selectors``) and vlmkit's own checkpoints (``checkpoint``).

May import: ``vlmkit.errors``, ``vlmkit.progress``, ``vlmkit.plugins``. Never data, training, interop or
inference.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # ``vlmkit.model`` was the module of the model class before core had sub-packages
    if name == "VisionLanguageModel":
        from vlmkit.model.vlm import VisionLanguageModel

        return VisionLanguageModel
    raise AttributeError(f"module 'vlmkit.model' has no attribute '{name}'")
