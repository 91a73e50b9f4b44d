#!/usr/bin/env python3
r"""Deploy the inspector components to a thing group (greengrassv2 create_deployment).

    python scripts/deploy_fleet.py \
        --thing-group-arn arn:aws:iot:eu-west-1:123456789012:thinggroup/line-1 \
        [--inference-version 1.0.0] [--model-version 1.2.0] [--stream-manager-version 2.3.0]
        [--config-merge '{"ImageDirectory": "/data/camera"}' | --config-merge @settings.json]
        [--config-reset /InferenceWorkers ...]
        [--precision fp32|int8] [--deployment-name NAME] [--region REGION] [--dry-run]

The document is deployments/fleet-deployment.json with its placeholders filled in: both
components, StreamManager, a rollout that starts slowly and speeds up while devices succeed, an
abort when too many fail, ROLLBACK of each device that fails, and a component update policy that
lets the running service finish its image first. Every version is a real one, never "latest":
the components' default to those in gdk-config.json (top level: inference) and
recipes/model/gdk-config.json (publish them first with `gdk component publish`);
StreamManager's to a pinned, known version (STREAM_MANAGER_VERSION), or
`--stream-manager-version latest` asks the service for its newest (not with --dry-run).

configurationUpdate carries only the user's settings for com.inspector.Inference
(--config-merge, --precision) and the keys to reset to the recipe's defaults first
(--config-reset: a new component version never changes a value a device already has, so a new
default reaches a device only through a reset); the model component has no configuration:
which file and digest a model version has travels with that version (its model.json and
recipe).
--precision int8 merges {"ModelPrecision": "int8"}: the devices load the INT8 file of the same
model version (switch back with --precision fp32).

A deployment replaces the previous one of the same thing group, so it always names both
components: to update only the model, pass a new --model-version and the current
--inference-version; devices then download only the model artifact.

--dry-run prints the document and calls nothing. Credentials and the default region are boto3's
(environment, profile); the region defaults to the one in the thing group ARN.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger("deploy_fleet")

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "deployments" / "fleet-deployment.json"
INFERENCE = "com.inspector.Inference"
MODEL = "com.inspector.ScratchModel"
STREAM_MANAGER = "aws.greengrass.StreamManager"
TOPIC_KEYS = frozenset({"PublishResultsOnTopic", "MetricsTopic", "PubSubTopic"})
PLACEHOLDERS = ("THING_GROUP_ARN", "INFERENCE_VERSION", "MODEL_VERSION", "STREAM_MANAGER_VERSION")
# The StreamManager version deployed unless told otherwise: a real, released one (2.3.0, April
# 2026, per the Greengrass developer guide's document history), inside the inference recipe's
# range for it. Bump it on purpose, after trying it.
STREAM_MANAGER_VERSION = "2.3.0"
REGISTRY = REPO / "recipes" / "model" / "published.json"

_THING_GROUP_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):iot:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"thinggroup/(?P<name>[A-Za-z0-9:_-]+)$"
)
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")


class DeployError(Exception):
    """The deployment cannot be made; the message says why."""


def gdk_version(kind: str, repo: Path = REPO) -> str:
    """The version in a GDK project: the top level for inference, recipes/<kind>/ otherwise."""
    project = repo if kind == "inference" else repo / "recipes" / kind
    config = json.loads((project / "gdk-config.json").read_text(encoding="utf-8"))
    (body,) = config["component"].values()
    return str(body["version"])


def parse_thing_group_arn(arn: str) -> dict[str, str]:
    match = _THING_GROUP_ARN.match(arn)
    if not match:
        raise DeployError(
            f"not a thing group ARN: {arn!r} "
            "(expected arn:aws:iot:REGION:ACCOUNT:thinggroup/NAME)"
        )
    return match.groupdict()


def read_config_merge(value: str | None, precision: str | None = None) -> str | None:
    """The inference component's configuration merge as a JSON string (create_deployment's form)."""
    if not value and not precision:
        return None
    merge: Any = {}
    if value:
        text = Path(value[1:]).read_text(encoding="utf-8") if value.startswith("@") else value
        try:
            merge = json.loads(text)
        except ValueError as exc:
            raise DeployError(f"--config-merge is not JSON: {exc}") from exc
    if not isinstance(merge, dict):
        raise DeployError("--config-merge must be a JSON object of settings")
    if precision:
        if merge.get("ModelPrecision", precision) != precision:
            raise DeployError(f"--precision {precision} but --config-merge sets ModelPrecision "
                              f"{merge['ModelPrecision']!r}")
        merge["ModelPrecision"] = precision
    # Checked here, not on 500 devices: the same rules the component applies.
    try:
        from inspector.settings import Settings, validate_mapping
    except ImportError:
        logger.warning("inspector is not importable: --config-merge is not validated locally")
    else:
        unknown = sorted(set(merge) - set(Settings.model_fields) - {"accessControl"})
        if unknown:
            raise DeployError(f"--config-merge: unknown setting(s) {unknown}")
        base = {"ImageDirectory": "/x", **{k: v for k, v in merge.items() if k != "accessControl"}}
        problems = validate_mapping(base)
        if problems:
            raise DeployError("--config-merge: " + "; ".join(f"{k}: {m}" for k, m in problems))
    topics = sorted(set(merge) & TOPIC_KEYS)
    if topics and "accessControl" not in merge:
        raise DeployError(
            f"--config-merge changes {topics} but not accessControl: the component would be "
            "refused the new topics; merge the matching accessControl policies too"
        )
    return json.dumps(merge, sort_keys=True)


def build_document(
    template: dict[str, Any],
    thing_group_arn: str,
    inference_version: str,
    model_version: str,
    stream_manager_version: str,
    deployment_name: str | None = None,
    config_merge: str | None = None,
    config_reset: list[str] | None = None,
) -> dict[str, Any]:
    parse_thing_group_arn(thing_group_arn)
    for label, version in (("inference", inference_version), ("model", model_version),
                           ("stream-manager", stream_manager_version)):
        if not _VERSION.match(version):
            raise DeployError(f"--{label}-version {version!r} is not MAJOR.MINOR.PATCH "
                              "(a deployment names real versions)")
    values = {
        "THING_GROUP_ARN": thing_group_arn,
        "INFERENCE_VERSION": inference_version,
        "MODEL_VERSION": model_version,
        "STREAM_MANAGER_VERSION": stream_manager_version,
    }

    def fill(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: fill(value) for key, value in node.items()}
        if isinstance(node, list):
            return [fill(value) for value in node]
        if isinstance(node, str) and node in values:
            return values[node]
        return node

    document: dict[str, Any] = fill(copy.deepcopy(template))
    for name in (INFERENCE, MODEL, STREAM_MANAGER):
        if name not in document.get("components", {}):
            raise DeployError(f"{TEMPLATE.name} does not deploy {name}")
    if deployment_name:
        document["deploymentName"] = deployment_name
    update: dict[str, Any] = {}
    if config_reset:  # the nucleus applies reset before merge (docs/greengrass.md)
        update["reset"] = list(config_reset)
    if config_merge:
        update["merge"] = config_merge
    if update:
        document["components"][INFERENCE]["configurationUpdate"] = update
    left = [p for p in PLACEHOLDERS if p in json.dumps(document)]
    if left:
        raise DeployError(f"placeholders left in the deployment document: {left}")
    return document


def read_config_reset(pointers: list[str]) -> list[str]:
    """--config-reset JSON pointers, each checked to name a setting of the inference component
    (``""`` resets the whole configuration to the recipe's defaults)."""
    known = {name.lower(): name for name in _setting_names()}
    for pointer in pointers:
        if pointer == "":
            continue
        key = pointer[1:].split("/", 1)[0] if pointer.startswith("/") else None
        if key is None:
            raise DeployError(f"--config-reset {pointer!r} is not a JSON pointer (e.g. "
                              "/InferenceWorkers; \"\" resets everything)")
        if known and key.lower() not in known:  # keys are case-insensitive in the nucleus
            raise DeployError(f"--config-reset {pointer!r}: no setting {key!r}")
    return pointers


def _setting_names() -> list[str]:
    try:
        from inspector.settings import Settings
    except ImportError:
        logger.warning("inspector is not importable: --config-reset is not validated locally")
        return []
    return [*Settings.model_fields, "accessControl"]


def check_model_version(version: str, registry: Path = REGISTRY) -> None:
    """Warn about a model version this checkout never built (published elsewhere, or a typo)."""
    try:
        recorded = json.loads(registry.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(recorded, dict) and version not in recorded:
        logger.warning("%s %s is not in %s: was it built and published from this checkout? "
                       "(recorded: %s)", MODEL, version, registry.name,
                       ", ".join(sorted(recorded)) or "none")


def stream_manager_requirement(repo: Path = REPO) -> str:
    """The inference recipe's VersionRequirement for StreamManager, e.g. '>=2.0.0 <3.0.0'."""
    text = (repo / "recipes" / "inference" / "recipe.yaml").read_text(encoding="utf-8")
    match = re.search(rf"{re.escape(STREAM_MANAGER)}:\s*\n(?:\s*#.*\n)*\s*VersionRequirement:"
                      r"\s*[\"']?([^\"'\n]+)", text)
    if not match:
        raise DeployError(f"recipes/inference/recipe.yaml: no VersionRequirement for "
                          f"{STREAM_MANAGER}")
    return match.group(1).strip()


def satisfies(version: str, requirement: str) -> bool:
    """``version`` meets every comparator of ``requirement`` ('>=2.0.0 <3.0.0')."""
    have = tuple(int(p) for p in version.split("."))
    for comparator in requirement.split():
        found = re.fullmatch(r"(>=|<=|>|<|=)?(\d+)\.(\d+)\.(\d+)", comparator)
        if not found:
            raise DeployError(f"cannot read the version requirement {requirement!r}")
        want = tuple(int(found.group(i)) for i in (2, 3, 4))
        op = found.group(1) or "="
        if not {">=": have >= want, "<=": have <= want, ">": have > want, "<": have < want,
                "=": have == want}[op]:
            return False
    return True


def latest_stream_manager(client: Any, partition: str, region: str) -> str:
    """The newest StreamManager version the inference recipe accepts (the service lists greater
    versions first)."""
    arn = f"arn:{partition}:greengrass:{region}:aws:components:{STREAM_MANAGER}"
    requirement = stream_manager_requirement()
    versions = client.list_component_versions(arn=arn, maxResults=100).get(
        "componentVersions", [])
    for item in versions:
        version = str(item["componentVersion"])
        if _VERSION.match(version) and satisfies(version, requirement):
            return version
    raise DeployError(f"no version of {STREAM_MANAGER} in {region} satisfies the inference "
                      f"recipe's {requirement!r} (got {[v['componentVersion'] for v in versions]})")


def make_client(region: str) -> Any:
    import boto3

    return boto3.client("greengrassv2", region_name=region)


def main(argv: list[str] | None = None, client: Any = None) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(name)s: %(message)s")
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--thing-group-arn", required=True)
    parser.add_argument("--inference-version", default=None,
                        help="default: the version in gdk-config.json (top level)")
    parser.add_argument("--model-version", default=None,
                        help="default: recipes/model/gdk-config.json's version")
    parser.add_argument("--stream-manager-version", default=STREAM_MANAGER_VERSION,
                        help=f"a version (default {STREAM_MANAGER_VERSION}), or 'latest' (asks "
                        "the service for its newest; not with --dry-run)")
    parser.add_argument("--config-merge", default=None, metavar="JSON|@FILE",
                        help="settings merged into com.inspector.Inference's configuration")
    parser.add_argument("--config-reset", action="append", default=[], metavar="POINTER",
                        help="a JSON pointer reset to the recipe's default before the merge "
                        "(e.g. /InferenceWorkers; repeatable)")
    parser.add_argument("--precision", choices=("fp32", "int8"), default=None,
                        help="merge ModelPrecision: which file of the model version the devices "
                        "load")
    parser.add_argument("--deployment-name", default=None)
    parser.add_argument("--template", type=Path, default=TEMPLATE)
    parser.add_argument("--region", default=None, help="default: the thing group's region")
    parser.add_argument("--dry-run", action="store_true", help="print the document only")
    args = parser.parse_args(argv)

    try:
        arn = parse_thing_group_arn(args.thing_group_arn)
        region = args.region or arn["region"]
        template = json.loads(args.template.read_text(encoding="utf-8"))
        stream_manager = args.stream_manager_version
        if stream_manager == "latest":
            if args.dry_run:
                raise DeployError(
                    f"--stream-manager-version latest asks the service, which --dry-run does "
                    f"not do: give a version (default {STREAM_MANAGER_VERSION})")
            client = client or make_client(region)
            stream_manager = latest_stream_manager(client, arn["partition"], region)
            logger.info("%s: latest version is %s", STREAM_MANAGER, stream_manager)
        model_version = args.model_version or gdk_version("model")
        check_model_version(model_version)
        document = build_document(
            template,
            args.thing_group_arn,
            args.inference_version or gdk_version("inference"),
            model_version,
            stream_manager,
            args.deployment_name,
            read_config_merge(args.config_merge, args.precision),
            read_config_reset(args.config_reset),
        )
        if args.dry_run:
            print(json.dumps(document, indent=2))
            return 0
        client = client or make_client(region)
        response = client.create_deployment(**document)
    except DeployError as exc:
        logger.error("%s", exc)
        return 2
    except Exception as exc:  # botocore errors: say what the service said, no traceback
        if type(exc).__module__.startswith("botocore"):
            logger.error("create_deployment failed: %s", exc)
            return 1
        raise
    print(json.dumps({k: response.get(k) for k in ("deploymentId", "iotJobId", "iotJobArn")}))
    logger.info("follow it: aws greengrassv2 get-deployment --deployment-id %s --region %s",
                response.get("deploymentId"), region)
    return 0


if __name__ == "__main__":
    sys.exit(main())
