"""Validate component arguments against the component's constructor signature.

Components declare their arguments as ordinary keyword parameters with type annotations. Build-time
context (input stream specs, LLM width, ...) comes through parameters listed in ``context``; every
other parameter is a user argument. Unknown names and values of the wrong type are refused with the
valid names listed, before anything is constructed.
"""

from __future__ import annotations

import difflib
import inspect
import typing
from typing import Any, Iterable

from .errors import ConfigError


def user_parameters(cls: Any, context: Iterable[str] = ()) -> dict[str, inspect.Parameter]:
    target = cls.__init__ if inspect.isclass(cls) else cls
    sig = inspect.signature(target)
    skip = {"self", *context}
    return {
        n: p for n, p in sig.parameters.items()
        if n not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _hints(cls: Any) -> dict[str, Any]:
    target = cls.__init__ if inspect.isclass(cls) else cls
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - unresolvable annotations: skip type checks
        return {}


def _matches(value: Any, hint: Any) -> bool:
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(hint)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin in (list, tuple, typing.Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = typing.get_args(hint)
        inner = args[0] if args and (origin is not tuple or (len(args) == 2 and args[1] is Ellipsis)) else None
        if inner is None and args and origin is tuple:
            return len(args) == len(value) and all(_matches(v, a) for v, a in zip(value, args))
        return inner is None or all(_matches(v, inner) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _describe(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def validate_args(component: str, cls: Any, args: dict[str, Any], context: Iterable[str] = ()) -> None:
    params = user_parameters(cls, context)
    hints = _hints(cls)
    for name, value in args.items():
        if name not in params:
            close = difflib.get_close_matches(name, list(params), n=1)
            raise ConfigError(
                f"{component}: unknown argument '{name}'"
                + (f" (did you mean '{close[0]}'?)" if close else "")
                + f"; valid arguments: {', '.join(params) or '(none)'}"
            )
        hint = hints.get(name, params[name].annotation)
        if not _matches(value, hint):
            raise ConfigError(
                f"{component}: argument '{name}' expects {_describe(hint)}, got {type(value).__name__} {value!r}"
            )
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in args]
    if missing:
        raise ConfigError(f"{component}: missing required argument(s): {', '.join(missing)}")


def describe_arguments(cls: Any, context: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Argument table for ``vlmkit info`` and the generated reference docs."""
    hints = _hints(cls)
    out = []
    for name, p in user_parameters(cls, context).items():
        default = None if p.default is inspect.Parameter.empty else p.default
        out.append({
            "name": name,
            "type": _describe(hints.get(name, p.annotation)) if (name in hints or p.annotation is not p.empty) else "any",
            "default": default if isinstance(default, (int, float, str, bool, list, tuple, dict, type(None))) else repr(default),
            "required": p.default is inspect.Parameter.empty,
        })
    return out
