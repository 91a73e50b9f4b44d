"""How the Greengrass nucleus authorizes an IPC publish against a component's ``accessControl``.

    allowed(access_control, "PublishToIoTCore", "factory/line-7/results")  # -> bool

Modelled on aws-greengrass-nucleus (``authorization/AuthorizationHandler.java``,
``WildcardTrie.java``, ``AuthorizationPolicyParser.java``; behaviour pinned by its
``WildcardTrieTest.java``, whose cases tests/test_greengrass_access.py repeats):

- the policies are ``accessControl.<service>.<policy id>.{operations, resources}``; a component's
  own ``accessControl`` grants that component; keys are case-insensitive in the nucleus's config;
- an operation matches when it is listed as ``aws.greengrass#<Operation>`` or as ``*``;
- resources: ``*`` is a glob wildcard anywhere in a resource, matching any characters, ``/``
  included (both services); ``${*}``, ``${$}``, ``${?}`` are escaped literal characters;
- ``aws.greengrass.ipc.mqttproxy`` (PublishToIoTCore, SubscribeToIoTCore) is looked up
  MQTT-style (``MqttProxyIPCAgent``: ``ResourceLookupPolicy.MQTT_STYLE``): ``+`` is a one-level
  wildcard where it is a whole level, ``#`` a multi-level one where it is the last whole level
  (``a/#`` also matches ``a``); anywhere else they are plain characters;
- ``aws.greengrass.ipc.pubsub`` (PublishToTopic, SubscribeToTopic) is looked up STANDARD: ``+``
  and ``#`` are plain characters.

Both the component (its validation hook and start-up check) and the project's nucleus emulator
use this module; the tests hold it to the nucleus's own test cases, not to itself.
"""

from __future__ import annotations

import functools
import re
from typing import Any

SERVICE_PREFIX = "aws.greengrass#"
MQTTPROXY = "aws.greengrass.ipc.mqttproxy"
PUBSUB = "aws.greengrass.ipc.pubsub"
SERVICES = {
    "PublishToIoTCore": MQTTPROXY,
    "SubscribeToIoTCore": MQTTPROXY,
    "PublishToTopic": PUBSUB,
    "SubscribeToTopic": PUBSUB,
}


@functools.lru_cache(maxsize=256)
def _pattern(resource: str, mqtt: bool) -> re.Pattern[str]:
    out: list[str] = []
    i, n = 0, len(resource)
    while i < n:
        c = resource[i]
        if c == "$" and i + 3 < n and resource[i + 1] == "{" and resource[i + 3] == "}":
            out.append(re.escape(resource[i + 2]))  # ${c}: the character c, literally
            i += 4
            continue
        if c == "*":
            out.append(".*")
        elif mqtt and c == "#" and i == n - 1 and (i == 0 or resource[i - 1] == "/"):
            if i == 0:
                out.append(".*")
            else:  # "a/#": "a", "a/", "a/b/c"
                out[-1] = "(?:/.*)?"
        elif (mqtt and c == "+" and (i == 0 or resource[i - 1] == "/")
              and (i == n - 1 or resource[i + 1] == "/")):
            out.append("[^/]*")
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def resource_matches(service: str, allowed_resource: str, resource: str) -> bool:
    """Whether a policy resource (with its wildcards) covers ``resource`` for ``service``."""
    return _pattern(allowed_resource, service == MQTTPROXY).fullmatch(resource) is not None


def _get_ci(mapping: Any, key: str) -> Any:
    if not isinstance(mapping, dict):
        return None
    if key in mapping:
        return mapping[key]
    lowered = key.lower()
    return next((v for k, v in mapping.items() if str(k).lower() == lowered), None)


def allowed(access_control: Any, operation: str, resource: str) -> bool:
    """Whether ``access_control`` (a component's ``accessControl`` value) allows ``operation``
    (short name, e.g. "PublishToIoTCore") on ``resource`` (a topic)."""
    service = SERVICES[operation]
    policies = _get_ci(access_control, service)
    for policy in (policies.values() if isinstance(policies, dict) else []):
        operations = _get_ci(policy, "operations") or []
        resources = _get_ci(policy, "resources") or []
        if isinstance(operations, str):
            operations = [operations]
        if isinstance(resources, str):
            resources = [resources]
        if SERVICE_PREFIX + operation not in operations and "*" not in operations:
            continue
        if any(resource_matches(service, str(r), resource) for r in resources):
            return True
    return False
