"""What every conformance suite shares: which component to test, with which tiny arguments, the model
built around it, and the checks that hold for any component (annotated, validated arguments).

A suite is a plain class; pytest collects the ``test_*`` methods of a ``Test*`` subclass. Nothing here
imports pytest: skipping imports it lazily, at test time, so importing the kit has no pytest side
effects and works without pytest installed.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, ClassVar

import torch

from vlmkit.errors import ConfigError
from vlmkit.model.assembly import build_model
from vlmkit.model.config import ComponentConfig, ModelConfig
from vlmkit.model.contracts import Connector, Objective, VisionEncoder
from vlmkit.model.vlm import VisionLanguageModel
from vlmkit.plugins.arguments import argument_hints, describe_arguments, fits, user_parameters, validate_args
from vlmkit.plugins.registry import registry
from vlmkit.testing.doubles import DOUBLES

#: context parameters every component of a kind must accept (the assembler passes them by keyword): the
#: contracts' own declarations, for factories that are functions and so carry none
CONTEXT_PARAMETERS: dict[str, tuple[str, ...]] = {
    "encoder": VisionEncoder.context_parameters,
    "connector": Connector.context_parameters,
    "objective": Objective.context_parameters,
    "dataset": (),
}
#: the baseline LLM every suite assembles around the component under test (about 0.1M parameters)
TINY_LLM_ARGS: dict[str, Any] = {"hidden_size": 64, "num_layers": 1, "num_heads": 4, "intermediate_size": 128}
#: distribution name given to component classes registered in-process for a test
IN_PROCESS_DISTRIBUTION = "vlmkit-conformance"


def skip(reason: str) -> None:
    """Skip the running test (pytest is imported only here, when a test is already running)."""
    import pytest

    pytest.skip(reason)


def tiny_args_for(factory: Any) -> dict[str, Any]:
    """Arguments that build a tiny instance: the class's ``tiny_args`` if set, else ``{"config": "tiny"}``
    when the constructor has a ``config`` argument, else ``{}`` (the defaults)."""
    explicit = getattr(factory, "tiny_args", None)
    if explicit is not None:
        return copy.deepcopy(dict(explicit))
    context = getattr(factory, "context_parameters", ()) or ()
    try:
        params = user_parameters(factory, context)
    except (TypeError, ValueError):
        return {}
    return {"config": "tiny"} if "config" in params else {}


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def prefix_matches(prefix: str, names: list[str]) -> list[str]:
    """Names equal to ``prefix`` or under it (``prefix.``), as ``named_parts()`` prefixes are read."""
    return [n for n in names if n == prefix or n.startswith(prefix + ".")]


def meta_build(cfg: ModelConfig) -> VisionLanguageModel:
    """``build_model(cfg, meta=True)``, with a failure explained."""
    try:
        return build_model(cfg, meta=True)
    except Exception as exc:  # noqa: BLE001 - turn any build failure into a pointed message
        raise AssertionError(
            f"build_model(meta=True) failed: {type(exc).__name__}: {exc}. On the meta device a component must "
            "build from configs without reading tensor values or files (its build parameter: BuildOptions(meta=True))"
        ) from exc


class ComponentConformance:
    """Base of the per-kind suites. Subclasses (the plugin author's ``Test*`` classes) set:

    * ``component``: the registry name (``"my-encoder"`` or ``"my-dist:my-encoder"``) or the class
      itself (registered in-process for the duration of each test);
    * ``component_args``: constructor arguments of a tiny instance (default: ``tiny_args_for``);
    * ``extra_args``: arguments added on top of those (e.g. ``{"stream": 1}`` for a specific setup);
    * ``max_parameters``: the tiny build must stay below this many parameters (fast tests).
    """

    kind: ClassVar[str] = ""
    component: ClassVar[Any] = None
    component_args: ClassVar[dict[str, Any] | None] = None
    extra_args: ClassVar[dict[str, Any]] = {}
    llm_args: ClassVar[dict[str, Any]] = TINY_LLM_ARGS
    max_parameters: ClassVar[int] = 5_000_000
    #: total sequence length of the test model (room for a few images and a short conversation)
    max_length: ClassVar[int] = 512
    seed: ClassVar[int] = 0
    #: intra-op threads while a check runs (restored after): tiny tensors run fastest on one thread,
    #: and many threads on a shared CI machine cost more in synchronisation than they compute
    torch_threads: ClassVar[int | None] = 1

    _registered: str | None = None
    _saved_threads: int | None = None

    # -- pytest's xunit hooks: register a class component (and the kit's partners) for one test --------
    def setup_method(self, method: Any = None) -> None:
        for kind, name, obj in DOUBLES:  # the default partners (vlmkit.testing.doubles)
            registry.register(kind, name, obj, distribution=IN_PROCESS_DISTRIBUTION)
        torch.manual_seed(self.seed)
        if self.torch_threads is not None:
            self._saved_threads = torch.get_num_threads()
            torch.set_num_threads(self.torch_threads)
        if self.component is None:
            raise TypeError(f"{type(self).__name__}: set `component` to a registry name or a component class")
        if not isinstance(self.component, str):
            name = f"conformance-{getattr(self.component, '__name__', 'component').lower()}"
            registry.register(self.kind, name, self.component, distribution=IN_PROCESS_DISTRIBUTION)
            self._registered = name

    def teardown_method(self, method: Any = None) -> None:
        if self._saved_threads is not None:
            torch.set_num_threads(self._saved_threads)
            self._saved_threads = None
        if self._registered is not None:
            registry.unregister(self.kind, self._registered, distribution=IN_PROCESS_DISTRIBUTION)
            self._registered = None
        for kind, name, _ in DOUBLES:
            registry.unregister(kind, name, distribution=IN_PROCESS_DISTRIBUTION)

    # -- what is under test ----------------------------------------------------------------------------
    @property
    def component_name(self) -> str:
        if isinstance(self.component, str):
            return self.component
        if self._registered is None:
            raise RuntimeError("setup_method() was not called (a subclass overriding it must call super())")
        return self._registered

    @property
    def factory(self) -> Any:
        """The class (or factory function) behind the component."""
        return registry.load(self.kind, self.component_name)

    @property
    def args(self) -> dict[str, Any]:
        base = copy.deepcopy(dict(self.component_args)) if self.component_args is not None else tiny_args_for(self.factory)
        return {**base, **copy.deepcopy(dict(self.extra_args))}

    def component_config(self) -> ComponentConfig:
        return ComponentConfig(self.component_name, self.args)

    def llm_config(self) -> ComponentConfig:
        return ComponentConfig("tiny-llama", dict(self.llm_args))

    @property
    def d_llm(self) -> int:
        return int(self.llm_args.get("hidden_size", 128))

    # -- models around the component -------------------------------------------------------------------
    def model_config(self) -> ModelConfig:  # pragma: no cover - per kind
        raise NotImplementedError

    def build_model(self, *, meta: bool = False) -> VisionLanguageModel:
        """The component inside a full model with baseline parts; refused when the 'tiny' build is big."""
        cfg = self.model_config()
        if not meta:
            self.check_tiny(cfg)
        return build_model(cfg, meta=meta)

    def check_tiny(self, cfg: ModelConfig) -> None:
        counts = type(self).__dict__.get("_meta_counts")
        if counts is None:
            counts = {}
            type(self)._meta_counts = counts  # type: ignore[attr-defined]
        key = repr(cfg.to_dict())
        if key not in counts:
            counts[key] = parameter_count(meta_build(cfg))
        n = counts[key]
        assert n <= self.max_parameters, (
            f"{self.kind} '{self.component_name}' with {self.args} builds a model of {n:,} parameters "
            f"(limit {self.max_parameters:,}); give the class a `tiny_args` that builds a tiny instance")

    def part_of(self, model: VisionLanguageModel) -> torch.nn.Module:  # pragma: no cover - per kind
        raise NotImplementedError

    def part_prefix(self, model: VisionLanguageModel) -> str:
        target = self.part_of(model)
        return next(n for n, m in model.named_modules() if m is target)

    # -- checks shared by every component kind ---------------------------------------------------------
    def test_arguments_are_annotated(self) -> None:
        """Every user argument has a type annotation, so configs are validated before construction."""
        factory = self.factory
        context = CONTEXT_PARAMETERS[self.kind]
        target = factory.__init__ if inspect.isclass(factory) else factory
        names = set(inspect.signature(target).parameters)
        missing = [c for c in context if c not in names]
        assert not missing, f"a {self.kind} constructor must accept the context parameter(s) {missing}"
        declared = tuple(getattr(factory, "context_parameters", ()) or ())
        rows = describe_arguments(factory, declared or context)
        untyped = [r["name"] for r in rows if r["type"] == "any"]
        assert not untyped, f"annotate these arguments (vlmkit validates configs from the hints): {untyped}"
        validate_args(self.kind, factory, self.args, context=declared or context)

    def test_bad_arguments_are_refused(self) -> None:
        """An unknown argument, or a value of the wrong type, is a ConfigError naming the argument."""
        factory = self.factory
        context = tuple(getattr(factory, "context_parameters", ()) or ()) or CONTEXT_PARAMETERS[self.kind]
        try:
            validate_args(self.kind, factory, {**self.args, "no_such_argument_xyz": 1}, context=context)
        except ConfigError as exc:
            assert "no_such_argument_xyz" in str(exc)
        else:
            raise AssertionError("an unknown argument was accepted")
        hints = argument_hints(factory)
        wrong = object()
        typed = [n for n in user_parameters(factory, context) if n in hints and not fits(wrong, hints[n])]
        if not typed:
            skip("no argument has a type that refuses arbitrary objects")
        try:
            validate_args(self.kind, factory, {**self.args, typed[0]: wrong}, context=context)
        except ConfigError as exc:
            assert typed[0] in str(exc)
        else:
            raise AssertionError(f"argument '{typed[0]}' accepted a value of the wrong type")
