"""YAML read with its aliases bounded: a document may not expand to more than ``MAX_NODES`` nodes.

PyYAML's safe loader shares an aliased node instead of copying it, so a "billion laughs" document (anchors
that alias anchors, nine levels deep) loads in microseconds, and then blows up whatever walks it: a deep copy,
``yaml.dump`` of the recipe, an error that echoes the value. The composed node graph is measured before any
Python object is made (each node counted once per path that reaches it, with memoisation, so the measuring
itself is linear in the document), and a document over the bound is refused with its file.
"""

from __future__ import annotations

from typing import Any

import yaml

from vlmkit.errors import ConfigError

#: expanded nodes a document may have: a recipe, a checkpoint's vlmkit.yaml or a --set value has hundreds
MAX_NODES = 200_000


def _expanded_size(root: yaml.Node) -> int:
    memo: dict[int, int] = {}
    # iterative post-order walk (a deep document must not hit Python's recursion limit)
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in memo:
            continue
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            memo[id(node)] = 1
            continue
        if done:
            memo[id(node)] = min(1 + sum(memo[id(c)] for c in children), MAX_NODES + 1)
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in memo)
    return memo[id(root)]


def load(text: str, where: str) -> Any:
    """``yaml.safe_load(text)``, refused (ConfigError naming ``where``) when it expands past ``MAX_NODES``."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except RecursionError:
            raise ConfigError(f"{where}: nested deeper than can be read (thousands of levels of [ or {{); no recipe, "
                              "config or checkpoint needs that") from None
        if root is None:
            return None
        size = _expanded_size(root)
        if size > MAX_NODES:
            raise ConfigError(f"{where}: the YAML expands to more than {MAX_NODES:,} values through its anchors and "
                              "aliases (the 'billion laughs' shape); nothing of it was used")
        return loader.construct_document(root)
    finally:
        loader.dispose()
