"""Validate component arguments against the component's constructor signature.

Components declare their arguments as ordinary keyword parameters with type annotations. Build-time
context (input stream specs, LLM width, ...) comes through parameters listed in ``context``; every
other parameter is a user argument. Unknown names and values of the wrong type are refused with the
valid names listed, before anything is constructed. A parameter annotated with a range
(``Annotated[int, Field(gt=0)]``, or annotated-types' ``Gt``/``Ge``...) is checked against it too.
"""

from __future__ import annotations

import difflib
import inspect
import typing
from typing import Any, Callable, Iterable

from pydantic import Field

from .errors import ConfigError

#: argument types with a range, for component signatures (sizes, counts): checked by ``validate_args``
PositiveInt = typing.Annotated[int, Field(gt=0)]
NonNegativeInt = typing.Annotated[int, Field(ge=0)]
PositiveFloat = typing.Annotated[float, Field(gt=0)]
NonNegativeFloat = typing.Annotated[float, Field(ge=0)]


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
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # noqa: BLE001 - unresolvable annotations: skip type checks
        return {}


def _matches(value: Any, hint: Any) -> bool:
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    if typing.get_origin(hint) is typing.Annotated:
        return _matches(value, typing.get_args(hint)[0])
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
    """A type as a user reads it: ``int``, ``'pad' | 'square'``, ``int > 0``, ``list[str]``."""
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        bounds = _bounds(hint)
        return _describe(typing.get_args(hint)[0]) + (f" {' and '.join(b for b, _ in bounds)}" if bounds else "")
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        return " | ".join(_describe(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "None"
    if origin is not None:
        return str(hint).replace("typing.", "")
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


#: annotated-types bound attributes, how they read, and what they require
_BOUND_KINDS = (("gt", ">", lambda v, b: v > b), ("ge", ">=", lambda v, b: v >= b),
                ("lt", "<", lambda v, b: v < b), ("le", "<=", lambda v, b: v <= b))


def _bounds(hint: Any) -> list[tuple[str, Callable[[Any], bool]]]:
    """The range an ``Annotated`` hint declares, as ("> 0", check) pairs (also inside a pydantic ``Field``)."""
    if typing.get_origin(hint) is not typing.Annotated:
        return []
    out = []
    for meta in typing.get_args(hint)[1:]:
        for m in getattr(meta, "metadata", None) or [meta]:
            for attr, op, ok in _BOUND_KINDS:
                bound = getattr(m, attr, None)
                if bound is not None:
                    out.append((f"{op} {bound}", lambda v, ok=ok, bound=bound: ok(v, bound)))
    return out


def _range_problem(value: Any, hint: Any) -> str | None:
    """Why ``value`` breaks the range an ``Annotated`` hint declares (None: it does not)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    bounds = _bounds(hint)
    return f"must be {' and '.join(text for text, _ in bounds)}" if any(not ok(value) for _, ok in bounds) else None


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
            base = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
            raise ConfigError(
                f"{component}: argument '{name}' expects {_describe(base)}, got {type(value).__name__} {value!r}"
            )
        problem = _range_problem(value, hint)
        if problem:
            raise ConfigError(f"{component}: argument '{name}' {problem}, got {value!r}")
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
