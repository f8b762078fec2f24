"""Refuse a model that cannot fit before allocating it, with the estimate.

A size typed by mistake (``--set encoder.width=1000000000``) would otherwise ask the allocator for tens of
gigabytes: an opaque allocator error at best, the kernel's OOM killer at worst. The model is first built on
the meta device (milliseconds for tiny models, ~0.15 s for an 8B LLM), which gives the exact bytes of its
parameters and buffers; if they exceed the memory available now, building stops with the estimate per
component. The check is a guard, not a gate: where it cannot be made (no meta build, no reading of the
available memory) the build goes on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from torch import nn

from vlmkit.errors import ComponentBuildError, ConfigError

log = logging.getLogger(__name__)
GIB = 1024 ** 3


def available_bytes() -> int | None:
    """Memory available to new allocations (Linux ``MemAvailable``), or None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def module_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def check_fits(build_on_meta: Callable[[], Any], parts: Callable[[Any], dict[str, nn.Module]],
               available: int | None = None) -> None:
    """Raise ConfigError when the model ``build_on_meta()`` describes needs more memory than is available."""
    available = available_bytes() if available is None else available
    if available is None:
        return
    try:
        shell = build_on_meta()
    except ComponentBuildError as exc:  # a constructor failed on the meta device
        if "overflow" in str(exc.original).lower():  # sizes whose product does not fit in 64 bits: no machine has it
            raise ConfigError(f"{exc.label} asks for a tensor too large to exist "
                              f"({str(exc.original).splitlines()[0][:160]}): nothing was allocated; check the sizes "
                              "in its config (a width, a layer count)") from None
        log.debug("no memory estimate (meta build failed: %s)", exc)
        return
    except ConfigError:
        raise  # the real build would refuse the same way: say it now
    except Exception as exc:  # noqa: BLE001 - no meta support: no estimate, build as asked
        log.debug("no memory estimate (meta build failed: %s)", exc)
        return
    sizes = {name: module_bytes(m) for name, m in parts(shell).items()}
    total = sum(sizes.values())
    if total <= available:
        return
    biggest = [kv for kv in sorted(sizes.items(), key=lambda kv: -kv[1])[:3] if kv[1] >= total / 100]
    each = ", ".join(f"{name} {size / GIB:.1f} GiB" for name, size in biggest)
    raise ConfigError(f"the model needs about {total / GIB:.1f} GiB for its weights alone ({each}), and "
                      f"{available / GIB:.1f} GiB are available: nothing was allocated; check the sizes in its "
                      "config (a width, a layer count), or count it with --meta")
