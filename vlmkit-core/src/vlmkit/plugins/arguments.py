"""Validate component arguments against the component's constructor signature.

Components declare their arguments as ordinary keyword parameters with type annotations. Build-time
context (input stream specs, LLM width, ...) comes through parameters listed in ``context``; every
other parameter is a user argument. Unknown names and values of the wrong type are refused with the
valid names listed, before anything is constructed. A parameter annotated with a range
(``Annotated[int, Field(gt=0)]``, or annotated-types' ``Gt``/``Ge``...) is checked against it too.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import typing
from typing import Any, Iterable

from pydantic import Field, PydanticSchemaGenerationError, TypeAdapter, ValidationError

from vlmkit.errors import ConfigError

#: argument types with a range, for component signatures (sizes, counts): checked by ``validate_args``;
#: the floats are finite (an ``lr: .inf`` would train to NaN and still exit 0)
PositiveInt = typing.Annotated[int, Field(gt=0)]
NonNegativeInt = typing.Annotated[int, Field(ge=0)]
PositiveFloat = typing.Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = typing.Annotated[float, Field(ge=0, allow_inf_nan=False)]
#: a count that also has a sane ceiling (a typo of a few zeros is refused before any work)
def BoundedInt(upper: int) -> typing.Any:  # noqa: N802 - used as a type
    return typing.Annotated[int, Field(gt=0, le=upper)]


#: the constructor parameter through which the assembler passes a component its build options
#: (``vlmkit.model.contracts.BuildOptions``: read weight files or not, meta device); never a user argument
BUILD_PARAMETER = "build"


def user_parameters(cls: Any, context: Iterable[str] = ()) -> dict[str, inspect.Parameter]:
    target = cls.__init__ if inspect.isclass(cls) else cls
    sig = inspect.signature(target)
    skip = {"self", BUILD_PARAMETER, *context}
    return {
        n: p for n, p in sig.parameters.items()
        if n not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def takes_build_options(factory: Any) -> bool:
    """Whether a component's constructor declares the ``build`` parameter."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        return BUILD_PARAMETER in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False


def argument_hints(cls: Any) -> dict[str, Any]:
    target = cls.__init__ if inspect.isclass(cls) else cls
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # noqa: BLE001 - unresolvable annotations: skip type checks
        return {}


def fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` is accepted for a parameter annotated ``hint`` (type and range)."""
    return _check(value, hint) is None


def _check(value: Any, hint: Any) -> str | None:
    """Why ``value`` does not fit ``hint`` (None: it does), by pydantic in strict mode: no coercion, so
    ``"3"`` is not an int and ``True`` is not an int; an int is a float; a list fits a tuple and back."""
    if hint is Any or hint is inspect.Parameter.empty:
        return None
    try:
        adapter = _adapter(hint)
    except TypeError:  # an unhashable annotation: built uncached, never skipped
        adapter = TypeAdapter(hint)
    except PydanticSchemaGenerationError:  # a class pydantic has no schema for (a torch module, ...)
        return None
    try:
        adapter.validate_python(_sequence_as_declared(value, hint), strict=True)
    except ValidationError as exc:
        kinds = {e["type"] for e in exc.errors()}
        return "range" if kinds <= _RANGE_ERRORS else "type"
    return None


#: pydantic error types of a value of the right type outside its declared range
_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


@functools.lru_cache(maxsize=None)
def _adapter(hint: Any) -> TypeAdapter:
    return TypeAdapter(hint)


def _sequence_as_declared(value: Any, hint: Any) -> Any:
    """A list and a tuple are both a sequence to a config: config files have lists only (for a parameter
    annotated as a tuple), Python callers may pass a tuple (for one annotated as a list)."""
    if not isinstance(value, (list, tuple)):
        return value
    if typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    kinds = {typing.get_origin(h) or h for h in (typing.get_args(hint) if _is_union(hint) else (hint,))}
    if tuple in kinds and list not in kinds:
        return tuple(value)
    if list in kinds and tuple not in kinds:
        return list(value)
    return value


def _is_union(hint: Any) -> bool:
    origin = typing.get_origin(hint)
    return origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>")


def _describe(hint: Any) -> str:
    """A type as a user reads it: ``int``, ``'pad' | 'square'``, ``int > 0``, ``list[str]``."""
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        bounds = _bounds(hint)
        return _describe(typing.get_args(hint)[0]) + (f" {' and '.join(bounds)}" if bounds else "")
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    if _is_union(hint):
        return " | ".join(_describe(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "None"
    if origin is not None:
        return str(hint).replace("typing.", "")
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


#: annotated-types bound attributes and how they read
_BOUND_KINDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _bounds(hint: Any) -> list[str]:
    """The range an ``Annotated`` hint declares, as text ("> 0"), also inside a pydantic ``Field``."""
    if typing.get_origin(hint) is not typing.Annotated:
        return []
    out = []
    for meta in typing.get_args(hint)[1:]:
        for m in getattr(meta, "metadata", None) or [meta]:
            for attr, op in _BOUND_KINDS:
                bound = getattr(m, attr, None)
                if bound is not None:
                    out.append(f"{op} {bound}")
    return out


def validate_args(component: str, cls: Any, args: dict[str, Any], context: Iterable[str] = ()) -> None:
    params = user_parameters(cls, context)
    hints = argument_hints(cls)
    for name, value in args.items():
        if name not in params:
            close = difflib.get_close_matches(name, list(params), n=1)
            raise ConfigError(
                f"{component}: unknown argument '{name}'"
                + (f" (did you mean '{close[0]}'?)" if close else "")
                + f"; valid arguments: {', '.join(params) or '(none)'}"
            )
        hint = hints.get(name, params[name].annotation)
        problem = _check(value, hint)
        if problem == "range":
            bounds = " and ".join(_bounds(hint))
            raise ConfigError(f"{component}: argument '{name}' must be {bounds}, got {value!r}")
        if problem:
            base = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
            raise ConfigError(
                f"{component}: argument '{name}' expects {_describe(base)}, got {type(value).__name__} {value!r}"
            )
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in args]
    if missing:
        raise ConfigError(f"{component}: missing required argument(s): {', '.join(missing)}")


def describe_arguments(cls: Any, context: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Argument table for ``vlmkit info`` and the generated reference docs."""
    hints = argument_hints(cls)
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
