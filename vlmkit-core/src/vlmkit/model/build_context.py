"""The ambient pretrained-weights switch of earlier releases, kept for plugins that still read it.

Components now receive their build options explicitly: a constructor that declares a ``build``
parameter gets ``vlmkit.model.contracts.BuildOptions`` (``pretrained``, ``meta``) from the assembler.
``load_pretrained()`` still answers the same question, with a ``DeprecationWarning``; nothing in vlmkit
reads it.
"""

from __future__ import annotations

import contextlib
import contextvars
import warnings
from typing import Iterator

_load_pretrained: contextvars.ContextVar[bool] = contextvars.ContextVar("vlmkit_load_pretrained", default=True)


def load_pretrained() -> bool:
    warnings.warn("vlmkit.model.build_context.load_pretrained() is deprecated: declare a 'build' constructor "
                  "parameter and read build.pretrained (vlmkit.model.contracts.BuildOptions)", DeprecationWarning,
                  stacklevel=2)
    return _load_pretrained.get()


@contextlib.contextmanager
def legacy_pretrained_switch(pretrained: bool) -> Iterator[None]:
    """What ``load_pretrained()`` answers while the assembler constructs one component."""
    token = _load_pretrained.set(pretrained)
    try:
        yield
    finally:
        _load_pretrained.reset(token)
