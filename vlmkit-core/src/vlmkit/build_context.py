"""Build-time switches that components read while being constructed.

``load_pretrained()`` is False when a model is being rebuilt from a checkpoint or on the meta device:
components then build their architecture from a config and skip reading weights from a path.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

_load_pretrained: contextvars.ContextVar[bool] = contextvars.ContextVar("vlmkit_load_pretrained", default=True)


def load_pretrained() -> bool:
    return _load_pretrained.get()


@contextlib.contextmanager
def no_pretrained_weights() -> Iterator[None]:
    token = _load_pretrained.set(False)
    try:
        yield
    finally:
        _load_pretrained.reset(token)
