"""Unknown keys in a config mapping: an error that names the key, the closest valid one and every valid one.

Shared by the model config and the parts it holds (``vlmkit.model.tiling``), below both so neither imports the
other for it.
"""

from __future__ import annotations

import difflib
from typing import Any

from vlmkit.errors import ConfigError


def check_keys(data: dict[str, Any], valid: set[str], where: str) -> None:
    unknown = [k for k in data if k not in valid]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(str(k), sorted(valid), n=1)
        raise ConfigError(
            f"{where}: unknown key '{k}'" + (f" (did you mean '{close[0]}'?)" if close else "")
            + f"; valid keys: {', '.join(sorted(valid))}"
        )
