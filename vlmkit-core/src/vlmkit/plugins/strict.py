"""Whether a plugin that fails to load is a hard error (CI: ``VLMKIT_STRICT_PLUGINS=1``) or is listed as
broken while the rest keep working (the default)."""

from __future__ import annotations

import os

#: set to 1/true to turn a plugin that fails to import into a hard error (CI).
STRICT_ENV = "VLMKIT_STRICT_PLUGINS"


def strict_mode() -> bool:
    return os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}
