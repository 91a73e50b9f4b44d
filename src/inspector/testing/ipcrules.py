"""The nucleus's rules, as pure functions: configuration key paths (case-insensitive keys),
change detection, deep merge, MQTT topic matching and ``accessControl`` authorization."""

from __future__ import annotations

import copy
from typing import Any

from inspector.greengrass.access import SERVICES, allowed

SERVICE_PREFIX = "aws.greengrass#"


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching with ``+`` (one level) and ``#`` (the rest, as the last level)."""
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return index == len(filter_levels) - 1
        if index >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[index]:
            return False
    return len(filter_levels) == len(topic_levels)


def find_key(node: dict[str, Any], key: str) -> str | None:
    """The stored spelling of ``key`` in ``node``: nucleus configuration keys are
    case-insensitive."""
    if key in node:
        return key
    lowered = key.lower()
    return next((k for k in node if k.lower() == lowered), None)


def lookup(config: dict[str, Any], key_path: tuple[str, ...]) -> tuple[bool, Any]:
    """(found, value) at ``key_path``; an empty path is the whole configuration."""
    node: Any = config
    for key in key_path:
        if not isinstance(node, dict):
            return False, None
        found = find_key(node, key)
        if found is None:
            return False, None
        node = node[found]
    return True, node


def changed_paths(old: Any, new: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Key paths of the leaves (or whole subtrees) that differ between two configurations."""
    if isinstance(old, dict) and isinstance(new, dict):
        paths: list[tuple[str, ...]] = []
        for key in list(old) + [k for k in new if k not in old]:
            if key not in new or key not in old:
                paths.append((*prefix, key))
            else:
                paths.extend(changed_paths(old[key], new[key], (*prefix, key)))
        return paths
    return [] if old == new else [prefix]


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


ACCESS_SERVICES = SERVICES


def authorized(access_control: Any, operation: str, resource: str) -> bool:
    """Whether a component's ``accessControl`` configuration allows ``operation`` (short name,
    e.g. "PublishToIoTCore") on ``resource`` (a topic or topic filter).

    The nucleus's rules (aws-greengrass-nucleus ``authorization/AuthorizationHandler.java`` and
    ``WildcardTrie.java``: glob ``*`` anywhere, ``${c}`` escapes, MQTT wildcards only for
    mqttproxy and only where they are whole levels), as ``inspector.greengrass.access``
    implements them; tests/test_greengrass_access.py pins that to the nucleus's own test cases.
    Before, this emulator matched ``*`` only as a whole resource and MQTT wildcards anywhere.
    """
    return allowed(access_control, operation, resource)
