"""Spec YAML: the safe loader with line numbers, bounded in bytes and nodes (aliases expanded).

A spec is data: YAML is read with the safe loader (no python tags, no pickles), duplicate keys are refused, and
every value's YAML path maps to its line, so that each error can name the line it is about. Used by
:mod:`convpipe.spec` and by cluster profiles (:mod:`convpipe.profiles`).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from . import limits
from .errors import SpecError

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser: 10-30x faster, same safety


class _LineLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Safe loader that refuses duplicate keys (a silent overwrite would hide a user's mistake)."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # '<<: *base' merges a mapping in (its keys may be overridden here): construct_mapping does it
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:  # '? [a, b]': a list or mapping as a key
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value, not a list or mapping", key_node.start_mark
            ) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# YAML 1.1 (PyYAML) reads 1e9 and 1.5e3 as strings; YAML 1.2 and JSON read them as numbers, and so does a
# user writing a size or a sigma: resolve them as floats too.
_LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))

#: A spec is small. More YAML nodes than this, counting every alias expansion, is refused before anything walks
#: the document: a few aliases of aliases ("billion laughs") would otherwise make validate and the service spin.
MAX_YAML_NODES = limits.MAX_YAML_NODES
MAX_SPEC_BYTES = limits.MAX_SPEC_BYTES


def _expanded_size(node: yaml.Node, source: str, limit: int = MAX_YAML_NODES) -> int:
    """Nodes in the document with aliases expanded (counting stops past ``limit``); refuses recursive aliases."""
    memo: dict[yaml.Node, int] = {}  # nodes hash by identity: an alias is the same node object
    active: set[yaml.Node] = set()

    def size(n: yaml.Node) -> int:
        k = n
        if k in memo:
            return memo[k]
        if k in active:
            raise SpecError("invalid YAML: an alias refers to a node that contains it (recursive data)",
                            path=source, line=n.start_mark.line + 1)
        active.add(k)
        if isinstance(n, yaml.MappingNode):
            s = 1 + sum(size(a) + size(b) for a, b in n.value)
        elif isinstance(n, yaml.SequenceNode):
            s = 1 + sum(size(c) for c in n.value)
        else:
            s = 1
        active.discard(k)
        memo[k] = s = min(s, limit + 1)
        return s

    return size(node)


def _line_map(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map every YAML path (a tuple of keys and indices) to its 1-based line."""
    out = {} if out is None else out
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[path + (key,)] = k.start_mark.line + 1
            _line_map(v, path + (key,), out)
            out[path + (key,)] = k.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _line_map(v, path + (i,), out)
    return out




def _count_events(text: str, source: str) -> None:
    """Refuse a document of more than MAX_YAML_NODES nodes (before aliases) while streaming its events, so a
    huge flat list is refused after MAX_YAML_NODES events rather than after building all of its nodes."""
    n = 0
    for ev in yaml.parse(text, Loader=_LineLoader):
        if isinstance(ev, (yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            n += 1
            if n > MAX_YAML_NODES:
                raise SpecError(f"the spec has more than {MAX_YAML_NODES} YAML values; put large kernels in a "
                                ".npy file", path=source, line=ev.start_mark.line + 1)


def parse_yaml(text: str, source: str = "<spec>") -> tuple[Any, dict[tuple, int]]:
    """Parse YAML text safely; return the data and its line map. YAML errors become SpecError.

    Linear in the text and bounded: at most :data:`MAX_SPEC_BYTES` of text and :data:`MAX_YAML_NODES`
    nodes (aliases expanded); the document is composed once (with libyaml when PyYAML has it) and its data
    built from those nodes.
    """
    size = len(text.encode("utf-8", "surrogatepass")) if len(text) * 4 > MAX_SPEC_BYTES else len(text)
    if size > MAX_SPEC_BYTES:
        raise SpecError(f"the spec is {size / 2**20:.1f} MiB; at most {MAX_SPEC_BYTES / 2**20:g} MiB is read "
                        "(put large kernels in a .npy file)", path=source)
    try:
        _count_events(text, source)
        loader = _LineLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None, {}
            if _expanded_size(node, source) > MAX_YAML_NODES:
                raise SpecError(f"the spec has more than {MAX_YAML_NODES} YAML nodes once its aliases are "
                                "expanded", path=source)
            data = loader.construct_document(node)
        finally:
            loader.dispose()
        lines = _line_map(node)
    except RecursionError:
        raise SpecError("invalid YAML: nested too deeply", path=source) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = e.problem or str(e)
        if "python/" in str(problem) or "python/" in str(e.context or ""):
            problem = f"YAML tags that build Python objects are refused (specs are data): {problem}"
        raise SpecError(f"invalid YAML: {problem}", path=source, line=line) from None
    except yaml.YAMLError as e:
        raise SpecError(f"invalid YAML: {e}", path=source) from None
    except (ValueError, TypeError, OverflowError) as e:  # a scalar its constructor cannot build (a bad date)
        raise SpecError(f"invalid YAML: {e}", path=source) from None
    return data, lines
