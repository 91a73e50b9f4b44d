"""accessControl matching, held to aws-greengrass-nucleus's own cases (WildcardTrieTest.java,
src/test/java/com/aws/greengrass/authorization/, commit a28341c4): MQTT-style lookups are what
mqttproxy uses, standard ones what pubsub uses (see inspector.greengrass.access)."""

from __future__ import annotations

import pytest

from inspector.greengrass.access import MQTTPROXY, PUBSUB, allowed, resource_matches

# (policy resource, topic, matches MQTT-style, matches standard): straight from WildcardTrieTest
NUCLEUS_CASES = [
    ("nowildcard", "nowildcard", True, True),
    ("nowildcard", "topic", False, False),
    ("abc*xy*z", "abc123xyabc!@/<>#$%^&*()_+-=z", True, True),
    ("abc*xy*z", "abcxy/ 7895z", True, True),
    ("abc*xy*z", "abc123xy90zABCzz0", False, False),
    ("abc*xy*z", "", False, False),
    ("*qwe*90*", "789qwe-+9qwe-+90ABC", True, True),
    ("*qwe*90*", "789qwe-+9A", False, False),
    ("ab/*/c", "ab/1/3/2/c", True, True),
    ("ab/*/c", "ab/1/34/2/c/", False, False),
    ("*wer", "123werX", False, False),
    ("*", "9999/88", True, True),
    ("**/abc", "7/8/abc", True, True),
    ("abc/#", "abc/1/2/3", True, False),
    ("abc/#", "abc", True, False),
    ("abc/#", "abc/", True, False),
    ("abc/#", "abcd/e/f123/4/5/6", False, False),
    ("abc/#", "abc/#", True, True),
    ("123/#/xyz/#", "123/#/xyz", True, False),
    ("123/#/xyz/#", "123/#/xyz/1/2/345", True, False),
    ("123/#/xyz/#", "123/4/5/6/xyz/abc", False, False),
    ("#/zzz/45", "x/zzz/45", False, False),
    ("#/zzz/45", "#/zzz/45", True, True),
    ("#", "asdu76/asdas/23", True, False),
    ("/#", "", True, False),
    ("/#", "/a/b/c/d/e", True, False),
    ("/#", "a/b/c/d", False, False),
    ("w/qqq#", "w/qqq/e/r", False, False),
    ("12/#/", "12/4/5/6", False, False),
    ("##", "abcd", False, False),
    ("abc/+/123", "abc/def/123", True, False),
    ("abc/+/123", "abc/def/g/123", False, False),
    ("abc/+/123", "abc/+/123", True, True),
    ("+/56", "123/56", True, False),
    ("+/56", "89/1/56", False, False),
    ("xyz/+/abcd/+/1", "xyz/ghj/abcd//1", True, False),
    ("123/fgh/+", "123/fgh/12/34", False, False),
    ("89/+/+/+/90", "89/1/2//90", True, False),
    ("89/+/+/+/90", "89/1/2/90", False, False),
    ("+", "abc", True, False),
    ("+", "/123", False, False),
    ("+/+", "/123", True, False),
    ("+/+", "/123/", False, False),
    ("ax/qwe+/123", "ax/qwert/123", False, False),
    ("12/+23", "12/x23", False, False),
    ("/+/++", "/33/ty", False, False),
    ("/+/++", "/zz/++", True, False),
    ("xyz*/+/*room/#", "xyzzzz/89/fan2/bedroom/light/5", True, False),
    ("12/*#", "12/34/5#", True, True),
    ("12/*#", "12/45/67", False, False),
    ("x*ui/+/#", "xyz/zz34ui/matchPlus/23", True, False),
    ("x*ui/+/#", "xyzzz34", False, False),
    ("a/+/+/#/+", "a/b/c/#/d", True, False),
    ("a/+/+/#/+", "a/+/+/#/+", True, True),
    ("a/+/+/#/+", "a/b/c/d/e", False, False),
    ("2131/#/#/+/ui/#", "2131/x/y/z/ui/1", False, False),
    ("2131/#/#/+/ui/#", "2131/#/#/z/ui/1/56", True, False),
    ("abc*/#", "abc123", True, False),
    ("a/*bc/#", "a/xyzbc/nt/bc", True, False),
    ("a/+/#", "a", False, False),
    ("a/+/#", "a/", True, False),
    ("acv/rt${*}mk", "acv/rt*mk", True, True),
    ("acv/rt${*}mk", "acv/rt123mk", False, False),
    ("acv/rt${*}mk", "acv/rt${*}mk", False, False),
    ("${$}/begin", "$/begin", True, True),
    ("end/${?}", "end/?", True, True),
    ("acv/rt${$}{*}mk", "acv/rt${abc/123/=-_+}mk", True, True),
]


@pytest.mark.parametrize(("pattern", "topic", "mqtt", "standard"), NUCLEUS_CASES)
def test_resource_matching_agrees_with_the_nucleus(
    pattern: str, topic: str, mqtt: bool, standard: bool
) -> None:
    assert resource_matches(MQTTPROXY, pattern, topic) is mqtt
    assert resource_matches(PUBSUB, pattern, topic) is standard


def test_policies_operations_and_services() -> None:
    access = {"aws.greengrass.ipc.mqttproxy": {"p1": {
        "operations": ["aws.greengrass#PublishToIoTCore"], "resources": ["factory/+/results"]}},
        "AWS.Greengrass.IPC.PubSub": {"p2": {"Operations": ["*"], "Resources": ["local/*"]}}}
    assert allowed(access, "PublishToIoTCore", "factory/line-7/results")
    assert not allowed(access, "PublishToIoTCore", "factory/line-7/other")
    assert not allowed(access, "SubscribeToIoTCore", "factory/line-7/results")  # operation
    assert not allowed(access, "PublishToIoTCore", "local/x")  # another service's policy
    assert allowed(access, "PublishToTopic", "local/a/b")  # case-insensitive keys, * operation
    assert not allowed(access, "PublishToTopic", "factory/line-7/results")
    assert not allowed(None, "PublishToIoTCore", "a") and not allowed({}, "PublishToTopic", "a")
