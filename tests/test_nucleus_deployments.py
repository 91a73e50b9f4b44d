"""The nucleus emulator's deployment rules: configuration across versions (defaults, reset,
merge, validation) and component-update notifications (Pre/Post events, DeferComponentUpdate),
driven by the unmodified awsiotsdk client where a component takes part."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from awsiot.greengrasscoreipc import connect, model
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

from inspector.testing.ipcrules import pointer_path, resolve_configuration
from inspector.testing.nucleus import NucleusEmulator

MODEL = "com.example.Model"
APP = "com.example.App"
T = 5.0

DEFAULTS_1 = {"ModelFile": "a.onnx", "ModelSha256": "aaa", "Threads": 2,
              "Nested": {"x": 1}}
DEFAULTS_2 = {"ModelFile": "b.onnx", "ModelSha256": "bbb", "Threads": 4,
              "Nested": {"x": 2, "y": 3}, "NewKey": True}


@pytest.fixture
def nucleus() -> Iterator[NucleusEmulator]:
    with NucleusEmulator(component_name=APP) as emulator:
        yield emulator


def client_of(nucleus: NucleusEmulator, token: str | None = None) -> GreengrassCoreIPCClientV2:
    ipc = connect(ipc_socket=nucleus.socket_path, authtoken=token or nucleus.svcuid, timeout=T)
    return GreengrassCoreIPCClientV2(client=ipc)


# ------------------------------------------------------------------ configuration rules


def test_first_deployment_gets_the_default_configuration() -> None:
    config, problems = resolve_configuration(None, DEFAULTS_1)
    assert config == DEFAULTS_1 and problems == []


def test_new_version_keeps_existing_values_and_adds_new_default_keys() -> None:
    running = {**DEFAULTS_1, "Threads": 8}  # 8 was merged by an earlier deployment
    config, _ = resolve_configuration(running, DEFAULTS_2)
    # the issue's bug: 1.2.0's file name and digest survive a deployment of the new version
    assert config["ModelFile"] == "a.onnx" and config["ModelSha256"] == "aaa"
    assert config["Threads"] == 8
    assert config["Nested"] == {"x": 1, "y": 3}  # nested: existing kept, new key added
    assert config["NewKey"] is True


def test_keys_are_matched_case_insensitively() -> None:
    config, _ = resolve_configuration({"modelfile": "a.onnx"}, {"ModelFile": "b.onnx"},
                                      merge={"MODELFILE": "c.onnx"})
    assert config == {"modelfile": "c.onnx"}


def test_reset_of_a_key_brings_the_new_default_back() -> None:
    config, _ = resolve_configuration(DEFAULTS_1, DEFAULTS_2, reset=["/ModelSha256", "/Nested/x"])
    assert config["ModelSha256"] == "bbb" and config["ModelFile"] == "a.onnx"
    assert config["Nested"] == {"x": 2, "y": 3}


def test_reset_of_the_whole_document_then_merge() -> None:
    running = {**DEFAULTS_1, "Stale": "gone"}
    config, _ = resolve_configuration(running, DEFAULTS_2, reset=[""], merge={"Threads": 1})
    assert config == {**DEFAULTS_2, "Threads": 1}  # reset first, defaults, then the merge


def test_merge_overwrites_and_reset_runs_before_it() -> None:
    config, _ = resolve_configuration(DEFAULTS_1, DEFAULTS_2, reset=["/Threads"],
                                      merge={"Threads": 16, "Nested": {"z": 0}})
    assert config["Threads"] == 16
    assert config["Nested"] == {"x": 1, "y": 3, "z": 0}


def test_reset_into_an_array_is_skipped_with_a_problem() -> None:
    running = {"List": [1, 2, 3]}
    config, problems = resolve_configuration(running, {}, reset=["/List/0", "no-slash"])
    assert config == running
    assert len(problems) == 2 and "array" in problems[0] and "JSON pointer" in problems[1]


@pytest.mark.parametrize(("pointer", "path"), [
    ("", ()), ("/a", ("a",)), ("/a~1b/c~0d", ("a/b", "c~d")), ("a", None),
])
def test_pointer_path(pointer: str, path: tuple[str, ...] | None) -> None:
    assert pointer_path(pointer) == path


def test_deploy_configuration_tracks_versions_and_applies(nucleus: NucleusEmulator) -> None:
    first = nucleus.deploy_configuration(MODEL, version="1.2.0", default_configuration=DEFAULTS_1)
    assert first.applied and nucleus.config[MODEL] == DEFAULTS_1
    second = nucleus.deploy_configuration(MODEL, version="1.3.0", default_configuration=DEFAULTS_2)
    assert second.applied and nucleus.versions[MODEL] == "1.3.0"
    assert nucleus.config[MODEL]["ModelSha256"] == "aaa"  # kept, as the nucleus keeps it
    preview = nucleus.deploy_configuration(MODEL, version="1.4.0", default_configuration=DEFAULTS_2,
                                           reset=[""], apply=False)
    assert preview.configuration == DEFAULTS_2 and nucleus.versions[MODEL] == "1.3.0"


def _validator(ipc: GreengrassCoreIPCClientV2, accept: bool) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    def on_event(event: model.ValidateConfigurationUpdateEvents) -> None:
        update = event.validate_configuration_update_event
        seen.append(dict(update.configuration))
        ipc.send_configuration_validity_report_async(
            configuration_validity_report=model.ConfigurationValidityReport(
                status="ACCEPTED" if accept else "REJECTED",
                deployment_id=update.deployment_id, message="checked")).result(T)

    _, op = ipc.subscribe_to_validate_configuration_updates_async(on_stream_event=on_event)
    op.get_response().result(T)
    return seen


def test_validation_comes_before_the_change_and_only_when_the_version_stays(
    nucleus: NucleusEmulator,
) -> None:
    nucleus.deploy_configuration(APP, version="1.0.0", default_configuration={"Threads": 2})
    ipc = client_of(nucleus)
    try:
        seen = _validator(ipc, accept=False)
        rejected = nucleus.deploy_configuration(
            APP, version="1.0.0", default_configuration={"Threads": 2}, merge={"Threads": 99},
            timeout_s=T)
        assert (rejected.status, rejected.applied) == ("REJECTED", False)
        assert seen == [{"Threads": 99}] and nucleus.config[APP] == {"Threads": 2}
        # a new version is not validated (the component restarts with it)
        upgraded = nucleus.deploy_configuration(
            APP, version="1.1.0", default_configuration={"Threads": 2}, merge={"Threads": 99},
            timeout_s=T)
        assert (upgraded.status, upgraded.applied) == ("NO_VALIDATORS", True)
        assert len(seen) == 1 and nucleus.config[APP] == {"Threads": 99}
    finally:
        ipc.close()


# ------------------------------------------------------------------ component updates


class UpdateListener:
    """A component that subscribes to component updates and answers with ``recheck_ms``."""

    def __init__(self, nucleus: NucleusEmulator, answers: list[int | None]) -> None:
        self.ipc = client_of(nucleus)
        self.answers = list(answers)
        self.events: list[model.ComponentUpdatePolicyEvents] = []
        self.got_post = threading.Event()
        _, op = self.ipc.subscribe_to_component_updates_async(on_stream_event=self.on_event)
        op.get_response().result(T)

    def on_event(self, event: model.ComponentUpdatePolicyEvents) -> None:
        self.events.append(event)
        if event.post_update_event is not None:
            self.got_post.set()
            return
        if not self.answers:
            return  # silent
        recheck = self.answers.pop(0)
        self.ipc.defer_component_update_async(
            deployment_id=event.pre_update_event.deployment_id, message="busy",
            recheck_after_ms=recheck).result(T)


def test_pre_update_deferred_then_released_and_post_update_sent(nucleus: NucleusEmulator) -> None:
    listener = UpdateListener(nucleus, [200, 0])
    try:
        notice = nucleus.notify_component_update("dep-1", timeout_s=T)
        assert notice.rounds == 2 and notice.silent == []
        assert [(d.component, d.recheck_after_ms, d.message) for d in notice.deferrals] == \
            [(APP, 200, "busy")]
        pre = [e.pre_update_event for e in listener.events]
        assert [p.deployment_id for p in pre] == ["dep-1", "dep-1"]
        assert pre[0].is_ggc_restarting is False
        assert nucleus.post_component_update("dep-1") == 1
        assert listener.got_post.wait(T)
        assert listener.events[-1].post_update_event.deployment_id == "dep-1"
    finally:
        listener.ipc.close()


def test_silent_component_times_out_and_the_update_goes_ahead(nucleus: NucleusEmulator) -> None:
    listener = UpdateListener(nucleus, [])
    try:
        notice = nucleus.notify_component_update("dep-2", timeout_s=0.3)
        assert notice.rounds == 1 and notice.silent == [APP] and notice.deferrals == []
        # too late: the nucleus no longer waits for this deployment
        with pytest.raises(model.ServiceError):
            listener.ipc.defer_component_update_async(
                deployment_id="dep-2", recheck_after_ms=1000).result(T)
    finally:
        listener.ipc.close()


def test_no_subscribers_means_no_wait(nucleus: NucleusEmulator) -> None:
    notice = nucleus.notify_component_update("dep-3", timeout_s=60)
    assert notice.rounds == 0


def test_defer_without_subscription_or_deployment_id_is_invalid(nucleus: NucleusEmulator) -> None:
    ipc = client_of(nucleus)
    try:
        with pytest.raises(model.InvalidArgumentsError) as not_subscribed:
            ipc.defer_component_update_async(deployment_id="x", recheck_after_ms=1).result(T)
        assert "not subscribed" in not_subscribed.value.message
        _, op = ipc.subscribe_to_component_updates_async(on_stream_event=lambda e: None)
        op.get_response().result(T)
        with pytest.raises(model.InvalidArgumentsError) as no_id:
            ipc.defer_component_update_async(recheck_after_ms=1).result(T)
        assert "deployment ID" in no_id.value.message
    finally:
        ipc.close()
