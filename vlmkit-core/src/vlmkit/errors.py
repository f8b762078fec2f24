"""Errors vlmkit raises on purpose.

Every error here is meant to be shown to a user as one line (the CLI prints ``str(err)`` and exits
non-zero), so messages name the thing at fault: the component, the file and record, the field.
"""

from __future__ import annotations


class VlmkitError(Exception):
    """Base of every error that is the user's input, not a bug in vlmkit."""


class UnknownComponentError(VlmkitError, KeyError):
    def __init__(self, kind: str, name: str, suggestions: list[str] | None = None, known: list[str] | None = None):
        self.kind, self.name, self.suggestions = kind, name, list(suggestions or [])
        msg = f"unknown {kind} '{name}'"
        if self.suggestions:
            msg += f"; did you mean: {', '.join(self.suggestions)}?"
        elif known:
            msg += f"; known {kind}s: {', '.join(sorted(known))}"
        else:
            msg += f"; no {kind} plugins are installed"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class AmbiguousComponentError(VlmkitError):
    def __init__(self, kind: str, name: str, candidates: list[str]):
        self.kind, self.name, self.candidates = kind, name, candidates
        super().__init__(
            f"{kind} name '{name}' is provided by several distributions; "
            f"use one of: {', '.join(candidates)}"
        )


class PluginLoadError(VlmkitError):
    def __init__(self, kind: str, qualified_name: str, target: str, error: str):
        self.kind, self.qualified_name, self.target, self.error = kind, qualified_name, target, error
        super().__init__(f"{kind} plugin '{qualified_name}' ({target}) failed to import: {error}")


class MissingPluginError(VlmkitError):
    def __init__(self, kind: str, name: str, distribution: str | None, version: str | None = None):
        self.kind, self.name, self.distribution = kind, name, distribution
        if distribution:
            hint = f"pip install {distribution}" + (f"=={version}" if version else "")
        else:
            hint = "install the plugin that provides it"
        super().__init__(f"this model needs the {kind} '{name}', which is not installed: {hint}")


class ConfigError(VlmkitError):
    """A config, recipe or --set value is wrong (unknown key, bad type, bad value)."""


class Incompatible(VlmkitError):
    """Raised by a component when its inputs do not fit it.

    Components raise it with the quantity that does not match; the assembler adds the names of both
    components before the user sees it.
    """

    def __init__(self, quantity: str, expected: object, got: object, hint: str = ""):
        self.quantity, self.expected, self.got, self.hint = quantity, expected, got, hint
        super().__init__(f"{quantity}: expected {expected}, got {got}" + (f". {hint}" if hint else ""))


class IncompatibleComponentsError(VlmkitError):
    def __init__(self, consumer: str, producer: str, detail: str):
        self.consumer, self.producer, self.detail = consumer, producer, detail
        super().__init__(f"{consumer} cannot be combined with {producer}: {detail}")


class ComponentBuildError(ConfigError):
    """A component's constructor failed with an error of its own (not a vlmkit error): which component, from
    which distribution, and the original error (kept as ``__cause__``, shown whole by ``--debug``)."""

    def __init__(self, label: str, source: str, exc: BaseException):
        self.label, self.source, self.original = label, source, exc
        first = (str(exc).splitlines() or [""])[0][:300]
        super().__init__(f"{label} (from {source}) failed to build: {type(exc).__name__}: {first} (the plugin's own "
                         "error; vlmkit --debug shows where)")


class CheckpointError(VlmkitError):
    """A checkpoint folder is missing, incomplete or corrupt."""


class DataError(VlmkitError):
    """A data record is unusable. Carries file, line (1-based) and field so nothing is anonymous."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 record_id: str | None = None, field: str | None = None, kind: str = "invalid"):
        self.file, self.line, self.record_id, self.field, self.kind = file, line, record_id, field, kind
        where = []
        if file is not None:
            where.append(f"{file}" + (f":{line}" if line is not None else ""))
        if record_id is not None:
            where.append(f"id={record_id}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = (" ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)
