"""Inert stand-ins for modules the original code imports but the fixtures never use (one mechanism, shared by the
fixture scripts): any attribute is another stand-in, a call returns one (or, used as a decorator, what it
decorates), and a stand-in may serve as a base class. No math of the originals goes through them.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types


class Inert:
    def __getattr__(self, name):
        return Inert()

    def __call__(self, *args, **kwargs):
        return args[0] if len(args) == 1 and callable(args[0]) and not kwargs else Inert()

    def __iter__(self):
        return iter(())

    def __mro_entries__(self, bases):
        return (object,)


class InertModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return Inert()


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots: tuple[str, ...], exact: tuple[str, ...]):
        self.roots, self.exact = roots, exact

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.roots or name in self.exact:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = InertModule(spec.name)
        module.__path__ = []
        module.__version__ = "0.0.0-stub"
        return module

    def exec_module(self, module):
        pass


def install(roots: tuple[str, ...], exact: tuple[str, ...] = ()) -> None:
    """Packages ``roots`` (with every submodule) and the modules ``exact`` import as inert stand-ins."""
    sys.meta_path.insert(0, _Finder(roots, exact))
