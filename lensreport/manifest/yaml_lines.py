"""YAML with line numbers: mappings and sequences that remember where each key and item
stood, so every manifest error can say file:line. Duplicate keys and aliases are errors, and
so is a text holding a surrogate code point (a "\\ud800" escape): it is no character, and
would fail later, far from its line (tokenizers, writing the site)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import ManifestError
from ..text import surrogates


class LineMap(dict):
    """A mapping that remembers the line of itself and of each key."""

    line: int = 0
    key_lines: dict[Any, int]


class LineSeq(list):
    """A sequence that remembers the line of itself and of each item."""

    line: int = 0
    item_lines: list[int]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences carry line numbers; duplicate keys are errors;
    aliases (*name) are refused, so an alias bomb cannot blow up memory or the error list."""

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D102 - PyYAML hook
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ManifestError(self.manifest_path, event.start_mark.line + 1,
                                f"YAML alias *{event.anchor} is not supported in a manifest; "
                                "write the value out")
        return super().compose_node(parent, index)


def _construct_map(loader: _LineLoader, node: yaml.MappingNode) -> LineMap:
    loader.flatten_mapping(node)
    result = LineMap()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, (str, int, float, bool)) or key is None:
            raise ManifestError(loader.manifest_path, line, "keys must be plain names")
        if key in result:
            raise ManifestError(loader.manifest_path, line, f"duplicate key {key!r}")
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


def _construct_seq(loader: _LineLoader, node: yaml.SequenceNode) -> LineSeq:
    result = LineSeq(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


def _construct_str(loader: _LineLoader, node: yaml.ScalarNode) -> str:
    value = loader.construct_yaml_str(node)
    problem = surrogates(value)
    if problem:
        raise ManifestError(loader.manifest_path, node.start_mark.line + 1, problem)
    return value


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)
_LineLoader.add_constructor("tag:yaml.org,2002:str", _construct_str)


def load_yaml(path: Path, text: str) -> Any:
    loader = _LineLoader(text)
    loader.manifest_path = str(path)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        raise ManifestError(path, line, f"not valid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ManifestError(path, None, f"not valid YAML: {exc}") from None
    finally:
        loader.dispose()
