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


# ------------------------------------------------------------ deployment configuration rules
#
# How the nucleus computes a component's configuration for a deployment, modelled on
# KernelConfigResolver.resolveConfigurationToApply (aws-greengrass-nucleus,
# src/main/java/com/aws/greengrass/componentmanager/KernelConfigResolver.java):
#
# 1. start from the configuration the component runs with now (nothing on a first deployment);
# 2. remove every key named by the deployment's ``reset`` JSON pointers ("" = the whole
#    configuration; a pointer to an array element is refused and skipped, logged as an error);
# 3. merge the recipe's DefaultConfiguration with timestamp 1, so it never overwrites a value
#    that exists (Topic.withNewerValue ignores an older timestamp; existing values carry the
#    timestamp of the deployment that wrote them): new default keys are added, existing kept;
# 4. merge the deployment's ``merge`` document with the deployment's timestamp: it overwrites.
#
# So a new component version does NOT bring its new default values for keys a core already
# has; only a reset (of that key, or of "") does. Keys are case-insensitive throughout.


def pointer_path(pointer: str) -> tuple[str, ...] | None:
    """The key path of a JSON pointer (RFC 6901: "/a/b", "~1" = "/", "~0" = "~"); None when
    it is not a pointer (must be "" or start with "/")."""
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        return None
    return tuple(part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/"))


def _remove(node: dict[str, Any], path: tuple[str, ...]) -> bool:
    for key in path[:-1]:
        found = find_key(node, key)
        if found is None or not isinstance(node[found], dict):
            return False
        node = node[found]
    found = find_key(node, path[-1])
    if found is None:
        return False
    del node[found]
    return True


def _fill_defaults(node: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Add the keys of ``defaults`` that ``node`` lacks, recursively; never overwrite."""
    for key, value in defaults.items():
        found = find_key(node, key)
        if found is None:
            node[key] = copy.deepcopy(value)
        elif isinstance(node[found], dict) and isinstance(value, dict):
            _fill_defaults(node[found], value)


def merge_update(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``deep_merge`` with the nucleus's case-insensitive keys (the stored spelling is kept)."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        found = find_key(merged, key) or key
        if isinstance(value, dict) and isinstance(merged.get(found), dict):
            merged[found] = merge_update(merged[found], value)
        else:
            merged[found] = copy.deepcopy(value)
    return merged


def resolve_configuration(
    current: dict[str, Any] | None,
    defaults: dict[str, Any] | None,
    *,
    reset: list[str] | tuple[str, ...] = (),
    merge: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The configuration a deployment gives a component, and the problems met (pointers that
    were skipped), following the four steps above. ``current`` None = first deployment."""
    config = copy.deepcopy(current) if current else {}
    problems: list[str] = []
    for pointer in reset:
        path = pointer_path(pointer)
        if path is None:
            problems.append(f"reset path {pointer!r} is not a JSON pointer: skipped")
            continue
        if path == ():
            config = {}
            continue
        if any(part.isdigit() or part == "-" for part in path):
            # the nucleus refuses pointers that may match an array element
            # (pointsToArrayElement in KernelConfigResolver), logs an error and goes on
            problems.append(f"reset path {pointer!r} may point into an array: skipped")
            continue
        _remove(config, path)
    _fill_defaults(config, defaults or {})
    if merge:
        config = merge_update(config, merge)
    return config, problems


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
