"""The one settings model of the service, keyed like the component recipe's DefaultConfiguration.

The same model is fed from a JSON/YAML file (``inspector run --config``), from CLI overrides and,
under Greengrass, from the component configuration read over IPC; it is the ONE validator:
``inspector check-config``, ``inspector run`` and the Greengrass configuration-validation hook all
ask ``validate_mapping`` / ``Settings.from_mapping`` and so reject the same things with the same
key path and message (publish-topic rules included). Its only I/O is checking that a ``ModelPath``
names an existing file, because a deployment must be refused when it does not, and, for a
``ModelPath`` without ``ModelSha256``, reading the models ``manifest.json`` beside it. Paths are
strings and the defaults that depend on other keys (``StateDirectory`` under ``ImageDirectory``,
``DoneDirectory`` under ``StateDirectory`` ...) are resolved by ``resolve_paths``, still without
touching the file system.

Key names are PascalCase like AWS's Greengrass ML components; ``ImageDirectory``, ``ModelPath``,
``ConfidenceThreshold``, ``IouThreshold``, ``PublishResultsOnTopic`` and ``UploadBucket`` are fixed
names other tools rely on.
"""

from __future__ import annotations

import difflib
import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from inspector.errors import ConfigError
from inspector.types import Thresholds

# How a running service takes a change of each key: every field of ``Settings`` carries one of
# these as ``json_schema_extra`` (a test checks), and LIVE_KEYS / RELOAD_KEYS / RESTART_KEYS below
# are read from them.
LIVE: dict[str, Any] = {"apply": "live"}  # between two images, the model session kept
RELOAD: dict[str, Any] = {"apply": "reload"}  # between two images, with a new model session
RESTART: dict[str, Any] = {"apply": "restart"}  # read at start-up only

# Placeholders UploadKeyTemplate may use; the upload sink fills them.
UPLOAD_KEY_FIELDS: frozenset[str] = frozenset(
    {"device", "date", "time", "name", "stem", "suffix", "sha256", "verdict"}
)

# AWS IoT Core topic limits (https://docs.aws.amazon.com/general/latest/gr/iot-core.html#limits_iot
# "Topic size": 256 bytes of UTF-8; "Maximum number of slashes in topic": 7), and reserved topics
# (https://docs.aws.amazon.com/iot/latest/developerguide/reserved-topics.html: "$" starts them).
TOPIC_FIELDS = frozenset({"thingName"})
MAX_TOPIC_BYTES = 256
MAX_TOPIC_SLASHES = 7
THING_NAME_ROOM = 128  # a thing name is at most 128 bytes: {thingName} must still fit

# ReviewPrefix: the characters the S3 keys of uploads may hold (as inspector.sinks.upload keeps)
REVIEW_PREFIX_UNSAFE = re.compile(r"[^A-Za-z0-9._\-/=+!*()]")

DEFAULT_EXTENSIONS = ("jpg", "jpeg", "png", "bmp", "tif", "tiff")

# Keys Greengrass keeps in a component's configuration beside its settings: not settings.
RESERVED_KEYS = frozenset({"accesscontrol"})  # compared lower-case


class Settings(BaseModel):
    """Everything ``inspector run`` can be told. Extra keys are errors; instances are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    # --- input -----------------------------------------------------------------------------
    ImageDirectory: str = Field(
        json_schema_extra=RESTART,
        min_length=1,
        description="Directory the service watches for camera images.",
        examples=["/var/lib/inspector/images"],  # the recipe's default
    )
    Recursive: bool = Field(
        json_schema_extra=RESTART,
        default=False, description="Also watch subdirectories of ImageDirectory."
    )
    Extensions: tuple[str, ...] = Field(
        json_schema_extra=RESTART,
        default=DEFAULT_EXTENSIONS,
        min_length=1,
        description="File extensions inspected (case-insensitive, without the dot).",
    )
    StableSeconds: float = Field(
        json_schema_extra=RESTART,
        default=1.0,
        ge=0.0,
        le=600.0,
        description=(
            "A file is read only once its size and mtime have not changed for this long (even "
            "after a close-after-write event: some cameras reopen the file per chunk) and, for "
            "JPEG and PNG, it ends with its end marker; one still without it after 10 times "
            "this is failed as incomplete. A file renamed into the folder, or a JPEG/PNG "
            "closed after its last write that already ends with its end marker, needs no wait."
        ),
    )
    RescanSeconds: float = Field(
        json_schema_extra=RESTART,
        default=60.0,
        ge=0.0,
        description="Every so often the directory is listed again, in case file events were "
        "lost (the kernel's event queue can overflow); 0 = never.",
    )
    MaxImagePixels: int = Field(
        json_schema_extra=RESTART,
        default=40_000_000,
        ge=1,
        description="Images with more pixels (read from the header) are refused before decoding.",
    )
    QueueSize: int = Field(
        json_schema_extra=RESTART,
        default=8,
        ge=1,
        le=1024,
        description="Images waiting to be decoded; when full the watcher waits (nothing dropped).",
    )
    DecodeWorkers: int = Field(
        json_schema_extra=RESTART,
        default=1,
        ge=1,
        le=16,
        description="Threads decoding and letterboxing images while the model runs.",
    )
    InferenceWorkers: int = Field(
        json_schema_extra=RESTART,
        default=1,
        ge=0,
        le=64,
        description="Threads running the model at once, sharing one session (the weights are "
        "loaded once). 1: one image at a time on spinning intra-op threads, the lowest latency "
        "per image. More: on a burst each runs its own image (more images per second where "
        "decoding competes with the session), but the session's threads sleep between "
        "parallel sections, which slows a single image. 0 = one per CPU core.",
    )

    # --- model -----------------------------------------------------------------------------
    ModelPath: str = Field(
        json_schema_extra=RELOAD,
        default="",
        description="ONNX model file; empty = the bundled/deployed default model.",
    )
    ModelSha256: str = Field(
        json_schema_extra=RELOAD,
        default="",
        pattern=r"^([0-9a-f]{64})?$",
        description="Expected sha256 of the model file (lower-case hex). Required with ModelPath, "
        "unless AllowUnverifiedModel or a models manifest.json beside the file lists it; the "
        "deployed model is checked against the sha256 its model component version ships in "
        "model.json.",
    )
    ModelPrecision: Literal["fp32", "int8"] = Field(
        json_schema_extra=RELOAD,
        default="fp32",
        description="Which file of the deployed model component to run: fp32, or int8 (faster "
        "on CPU-only devices). Applied live (the model is reloaded). Ignored with ModelPath.",
    )
    AllowUnverifiedModel: bool = Field(
        json_schema_extra=RELOAD,
        default=False,
        description="Load ModelPath without a ModelSha256 to check it against. Off: such a "
        "model is refused. On: it loads with a WARNING at every start.",
    )
    ConfidenceThreshold: float = Field(
        json_schema_extra=LIVE,
        default=0.25,
        ge=0.0,
        le=1.0,
        description="A detection counts only when its confidence is above this (equal is "
        "dropped); any left make a 'defect'.",
    )
    IouThreshold: float = Field(
        json_schema_extra=LIVE,
        default=0.7,
        ge=0.0,
        le=1.0,
        description="IoU above which non-maximum suppression drops the weaker box of a class.",
    )
    MaxDetections: int = Field(
        json_schema_extra=LIVE,
        default=300, ge=1, le=10_000, description="Most detections kept per image."
    )
    ExecutionProviders: tuple[str, ...] = Field(
        json_schema_extra=RELOAD,
        default=("CPUExecutionProvider",),
        min_length=1,
        description="ONNX Runtime execution providers, in order of preference.",
    )
    IntraOpThreads: int = Field(
        json_schema_extra=RELOAD,
        default=0, ge=0, le=256, description="ONNX Runtime intra-op threads; 0 = its default."
    )
    InterOpThreads: int = Field(
        json_schema_extra=RELOAD,
        default=0, ge=0, le=256, description="ONNX Runtime inter-op threads; 0 = its default."
    )

    # --- disposition -----------------------------------------------------------------------
    ProcessedAction: Literal["move", "delete"] = Field(
        json_schema_extra=RESTART,
        default="move",
        description="What happens to an inspected image: moved to DoneDirectory or deleted.",
    )
    StateDirectory: str = Field(
        json_schema_extra=RESTART,
        default="",
        description=(
            "The service's own folder (journal, default done/failed/held/outbox folders); "
            "empty = ImageDirectory/.inspector. Never watched."
        ),
    )
    DoneDirectory: str = Field(
        json_schema_extra=RESTART,
        default="", description="Processed images; empty = StateDirectory/done."
    )
    FailedDirectory: str = Field(
        json_schema_extra=RESTART,
        default="",
        description="Images that could not be inspected, each with <name>.reason.txt beside it; "
        "empty = StateDirectory/failed.",
    )
    HeldDirectory: str = Field(
        json_schema_extra=RESTART,
        default="",
        description="Flagged images held until their upload is confirmed; "
        "empty = StateDirectory/held.",
    )

    # --- retention (housekeeping) ----------------------------------------------------------
    DoneRetentionDays: float = Field(
        json_schema_extra=LIVE,
        default=7.0,
        ge=0.0,
        le=36_500.0,
        description="Processed images in DoneDirectory older than this (by mtime) are deleted "
        "by the housekeeping pass; 0 = no age limit.",
    )
    DoneMaxMegabytes: float = Field(
        json_schema_extra=LIVE,
        default=2048.0,
        ge=0.0,
        description="DoneDirectory is trimmed to this total size (MiB), oldest files first; "
        "0 = no size limit.",
    )
    OutboxRetentionDays: float = Field(
        json_schema_extra=LIVE,
        default=30.0,
        ge=0.0,
        le=36_500.0,
        description="Standalone mode: outbox files older than this are deleted; 0 = no age limit.",
    )
    OutboxMaxMegabytes: float = Field(
        json_schema_extra=LIVE,
        default=1024.0,
        ge=0.0,
        description="Standalone mode: OutboxDirectory is trimmed to this total size (MiB), oldest "
        "files first; 0 = no size limit.",
    )
    JournalMaxMegabytes: float = Field(
        json_schema_extra=LIVE,
        default=1.0,
        gt=0.0,
        le=1024.0,
        description="The journal (StateDirectory/journal.jsonl) is compacted to its open entries "
        "whenever it grows past this (MiB).",
    )
    HousekeepingSeconds: float = Field(
        json_schema_extra=LIVE,
        default=600.0,
        ge=1.0,
        le=86_400.0,
        description="Seconds between housekeeping passes (the first at start-up). Held and failed "
        "images are never removed by housekeeping.",
    )

    # --- standalone sinks ------------------------------------------------------------------
    ResultsFile: str = Field(
        json_schema_extra=RESTART,
        default="",
        description="JSONL file of results (one line per image); "
        "empty = StateDirectory/results.jsonl.",
    )
    OutboxDirectory: str = Field(
        json_schema_extra=RESTART,
        default="",
        description="Standalone mode: flagged images are copied here with their result; "
        "empty = StateDirectory/outbox.",
    )
    AnnotateOutbox: bool = Field(
        json_schema_extra=LIVE,
        default=True,
        description="Standalone mode: also write a copy of each flagged image, boxes drawn.",
    )
    DeviceName: str = Field(
        json_schema_extra=LIVE,
        default="",
        description="The 'device' field of every result; empty = AWS_IOT_THING_NAME, "
        "else the host name.",
    )

    # --- Greengrass ------------------------------------------------------------------------
    PublishTarget: Literal["iotcore", "pubsub", "both"] = Field(
        json_schema_extra=LIVE,
        default="iotcore",
        description="Where results are published under Greengrass: AWS IoT Core (MQTT), "
        "local pub/sub, or both.",
    )
    PublishResultsOnTopic: str = Field(
        json_schema_extra=LIVE,
        default="inspector/results",
        min_length=1,
        description="IoT Core (MQTT) topic results are published on.",
    )
    PubSubTopic: str = Field(
        json_schema_extra=LIVE,
        default="inspector/results",
        min_length=1,
        description="Local Greengrass pub/sub topic results are published on.",
    )
    MetricsTopic: str = Field(
        json_schema_extra=LIVE,
        default="inspector/metrics",
        description="IoT Core topic for periodic service metrics; empty = no metrics.",
    )
    MetricsIntervalSeconds: float = Field(
        json_schema_extra=LIVE,
        default=60.0, ge=0.0, description="Seconds between metrics messages (standalone: between "
        "the log lines of the drift signals); 0 = none."
    )
    UploadBucket: str = Field(
        json_schema_extra=LIVE,
        default="",
        description="S3 bucket flagged images are uploaded to through StreamManager; "
        "empty = no upload.",
    )
    UploadKeyTemplate: str = Field(
        json_schema_extra=LIVE,
        default="inspector/{device}/{date}/{stem}-{sha256}{suffix}",
        min_length=1,
        description="S3 object key of an uploaded image; placeholders: "
        + ", ".join("{" + f + "}" for f in sorted(UPLOAD_KEY_FIELDS))
        + ".",
    )
    UploadMaxRetries: int = Field(
        json_schema_extra=LIVE,
        default=3, ge=0, le=100,
        description="Upload retries always made before an upload can fail finally (with "
        "UploadRetryHours 0: retries after the first attempt before giving up, the old meaning).",
    )
    UploadRetryHours: float = Field(
        json_schema_extra=LIVE,
        default=24.0, ge=0.0, le=24.0 * 30,
        description="A failed upload is retried with backoff for this long after the image was "
        "inspected (across restarts); only then is the image moved to FailedDirectory.",
    )
    # --- review uploads (the data loop) and drift signals --------------------------------
    UncertainUpload: bool = Field(
        json_schema_extra=LIVE,
        default=False,
        description="Review uploads: passing images whose best confidence lies in the "
        "UncertainBand just below ConfidenceThreshold, and an AuditSampleRate share of the "
        "other passes, are copied with their result JSON for labelling: uploaded to UploadBucket "
        "under ReviewPrefix through StreamManager (Greengrass) or kept in ReviewDirectory "
        "(standalone). Best effort: never delays an image or holds it.",
    )
    UncertainBand: float = Field(
        json_schema_extra=LIVE,
        default=0.15,
        ge=0.0,
        le=1.0,
        description="A passing image is 'uncertain' when its best confidence (also when no box "
        "passed) is at least ConfidenceThreshold minus this; also the band of the metrics' "
        "uncertain_share.",
    )
    AuditSampleRate: float = Field(
        json_schema_extra=LIVE,
        default=0.0,
        ge=0.0,
        le=1.0,
        description="With UncertainUpload: this fraction of the other passing images (chosen at "
        "random) is sent for review as an audit sample (e.g. 0.01); 0 = none.",
    )
    ReviewPrefix: str = Field(
        json_schema_extra=LIVE,
        default="review/",
        max_length=256,
        description="S3 key prefix of review uploads; the key is <prefix><reason>/<thing>/"
        "<date>/<stem>-<sha256><suffix>, reason 'uncertain' or 'audit', the result JSON beside "
        "it as <key>.json.",
    )
    ReviewMaxPerHour: int = Field(
        json_schema_extra=LIVE,
        default=60,
        ge=1,
        le=100_000,
        description="At most this many review images per hour (a sliding hour); beyond it an "
        "image is skipped (counted; one WARNING per hour).",
    )
    ReviewMaxMegabytesPerHour: float = Field(
        json_schema_extra=LIVE,
        default=100.0,
        gt=0.0,
        le=100_000.0,
        description="At most this many MiB of review images (and their JSON) per sliding hour; "
        "beyond it an image is skipped (counted; one WARNING per hour).",
    )
    ReviewDirectory: str = Field(
        json_schema_extra=RESTART,
        default="",
        description="Standalone mode: review images and their result JSON are kept here "
        "(<reason>/<date>/...). Greengrass: their copies wait here until StreamManager reports "
        "the upload's final status. Empty = StateDirectory/review. Never watched.",
    )
    ReviewRetentionDays: float = Field(
        json_schema_extra=LIVE,
        default=14.0,
        ge=0.0,
        le=36_500.0,
        description="Files in ReviewDirectory older than this are deleted by housekeeping "
        "(an upload still waiting for them is then dropped, counted as failed); 0 = no age "
        "limit.",
    )
    ReviewMaxMegabytes: float = Field(
        json_schema_extra=LIVE,
        default=512.0,
        ge=0.0,
        description="ReviewDirectory is trimmed to this total size (MiB), oldest files first, "
        "so a StreamManager that never answers cannot fill the disk; 0 = no size limit.",
    )

    SpoolMaxMessages: int = Field(
        json_schema_extra=RESTART,
        default=10_000,
        ge=1,
        description="Greengrass: results kept on disk while the nucleus cannot take them; "
        "beyond this a result is not published (logged, counted).",
    )
    SpoolMaxMegabytes: float = Field(
        json_schema_extra=RESTART,
        default=64.0,
        gt=0.0,
        description="Greengrass: the same spool's cap in megabytes (MiB) of messages.",
    )
    ShutdownSeconds: float = Field(
        json_schema_extra=RESTART,
        default=10.0,
        gt=0.0,
        le=120.0,
        description="On SIGTERM: time to finish the image in flight and flush the sinks. Keep "
        "it below the recipe's shutdown timeout (15 s by default).",
    )
    SinkStallSeconds: float = Field(
        json_schema_extra=LIVE,
        default=300.0, ge=1.0, le=86_400.0,
        description="A result that no sink retry could make durable for this long stops the "
        "service: exit code 6 (standalone) or state ERRORED (Greengrass); the images are kept.",
    )
    MinFreeMegabytes: float = Field(
        json_schema_extra=LIVE,
        default=50.0, ge=0.0,
        description="Intake pauses while the file system of DoneDirectory, ResultsFile, the "
        "spool or StateDirectory has less free space than this (MiB); 0 = no check.",
    )

    @field_validator("Extensions", "ExecutionProviders", mode="before")
    @classmethod
    def _split_strings(cls, value: Any) -> Any:
        # a recipe or --set may give "jpg, png" for a list
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("Extensions", mode="after")
    @classmethod
    def _normalise_extensions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for ext in value:
            clean = ext.strip().lower().lstrip(".")
            if not clean or "/" in clean:
                raise ValueError(f"not a file extension: {ext!r}")
            if clean not in out:
                out.append(clean)
        return tuple(out)

    @field_validator("ExecutionProviders", mode="after")
    @classmethod
    def _check_providers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not name.endswith("ExecutionProvider"):
                raise ValueError(f"not an ONNX Runtime provider name: {name!r}")
        return value

    @field_validator("PublishResultsOnTopic", "PubSubTopic", "MetricsTopic", mode="after")
    @classmethod
    def _check_topic(cls, value: str) -> str:
        problems = topic_problems(value) if value else []  # empty MetricsTopic = no metrics
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("ModelPath", mode="after")
    @classmethod
    def _check_model_path(cls, value: str) -> str:
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                what = "is a directory" if path.is_dir() else "no such model file on this device"
                raise ValueError(f"{path}: {what}")
        return value

    @model_validator(mode="after")
    def _check_model_verifiable(self) -> Settings:
        # A model that cannot be verified is refused unless the configuration says so; the
        # bundled models are verified against the manifest.json beside them.
        if self.ModelPath and not self.ModelSha256 and not self.AllowUnverifiedModel:
            from inspector.models import manifest_sha256

            if not manifest_sha256(Path(self.ModelPath)):
                raise PydanticCustomError(
                    "model_unverified",
                    "ModelPath is set without ModelSha256: set ModelSha256 to the file's "
                    "sha256 (sha256sum FILE), or AllowUnverifiedModel: true to load it unchecked")
        return self

    @field_validator("ReviewPrefix", mode="after")
    @classmethod
    def _check_review_prefix(cls, value: str) -> str:
        bad = sorted(set(REVIEW_PREFIX_UNSAFE.findall(value)))
        if bad:
            raise ValueError(f"characters not allowed in an S3 key prefix here: {bad}; "
                             "allowed: letters, digits and . _ - / = + ! * ( )")
        if value.startswith("/") or ".." in value or "//" in value:
            raise ValueError("an S3 key prefix must not start with '/', nor hold '..' or '//'")
        return value

    @field_validator("UploadKeyTemplate", mode="after")
    @classmethod
    def _check_key_template(cls, value: str) -> str:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
        except ValueError as exc:
            raise ValueError(f"malformed template: {exc}") from None
        unknown = sorted({f for f in fields if f not in UPLOAD_KEY_FIELDS})
        if unknown:
            raise ValueError(
                f"unknown placeholder(s) {unknown}; allowed: {sorted(UPLOAD_KEY_FIELDS)}"
            )
        return value

    # --- construction ----------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Settings:
        """Build from recipe-style keys; raise ``ConfigError`` listing every problem by key."""
        settings, problems = validated(data)
        if settings is None:
            raise ConfigError(_summary(problems), problems)
        return settings

    def to_mapping(self) -> dict[str, Any]:
        """The recipe-style dict (JSON types only): ``from_mapping(s.to_mapping()) == s``."""
        return dict(self.model_dump(mode="json"))

    def replace(self, **changes: Any) -> Settings:
        """A validated copy with some keys changed (``model_copy`` would skip validation)."""
        return Settings.from_mapping({**self.to_mapping(), **changes})

    @property
    def thresholds(self) -> Thresholds:
        """ConfidenceThreshold, IouThreshold and MaxDetections as the one value post-processing
        takes (a change to it never needs a new model session)."""
        return Thresholds(self.ConfidenceThreshold, self.IouThreshold, self.MaxDetections)

    def changed_keys(self, other: Settings) -> frozenset[str]:
        mine, theirs = self.to_mapping(), other.to_mapping()
        return frozenset(k for k in mine if mine[k] != theirs[k])


def _keys_applied(how: dict[str, Any]) -> frozenset[str]:
    return frozenset(name for name, info in Settings.model_fields.items()
                     if info.json_schema_extra == how)


LIVE_KEYS = _keys_applied(LIVE)
RELOAD_KEYS = _keys_applied(RELOAD)
RESTART_KEYS = _keys_applied(RESTART)


def topic_problems(template: str) -> list[str]:
    """What is wrong with a publish-topic template (empty when it is fine)."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        return [f"malformed topic template {template!r}: {exc}"]
    unknown = sorted({f for f in fields if f not in TOPIC_FIELDS})
    if unknown:
        return [f"unknown placeholder(s) {unknown} in topic {template!r}; allowed: {{thingName}}"]
    problems = []
    if "+" in template or "#" in template:
        problems.append(f"a publish topic cannot contain the wildcards + or #: {template!r}")
    if template.startswith("$"):
        problems.append(f"topic {template!r} starts with '$': reserved by AWS IoT ($aws/...)")
    if template.startswith("/") or template.endswith("/") or "//" in template:
        problems.append(f"topic {template!r} has an empty level")
    bare = template.replace("{thingName}", "")
    if bare.count("/") > MAX_TOPIC_SLASHES:
        problems.append(f"topic {template!r} has more than {MAX_TOPIC_SLASHES + 1} levels")
    limit = MAX_TOPIC_BYTES - (THING_NAME_ROOM if "{thingName}" in template else 0)
    if len(bare.encode("utf-8")) > limit:
        problems.append(f"topic {template!r} is too long for AWS IoT Core "
                        f"({len(bare.encode('utf-8'))} bytes, at most {limit})")
    return problems


def validated(data: Mapping[str, Any]) -> tuple[Settings | None, list[tuple[str, str]]]:
    """The settings a proposed configuration describes and no problems, or None and every
    problem as (key path, message): one validation for both."""
    if not isinstance(data, Mapping):
        return None, [("", f"expected a mapping of settings, got {type(data).__name__}")]
    try:
        return Settings.model_validate(settings_only(data)), []
    except ValidationError as exc:
        return None, [("ModelSha256" if err["type"] == "model_unverified"
                       else _key_path(err["loc"]), _message(err)) for err in exc.errors()]


def validate_mapping(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every problem of a proposed configuration as (key path, message); empty when valid.

    This is what a Greengrass configuration-validation hook answers with.
    """
    return validated(data)[1]


def closest_key(name: str) -> str | None:
    """The setting a misspelt ``name`` most likely means (case-insensitive), or None."""
    by_lower = {key.lower(): key for key in Settings.model_fields}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    match = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[match[0]] if match else None


def _message(err: Any) -> str:
    if err["type"] == "extra_forbidden" and len(err["loc"]) == 1:
        guess = closest_key(str(err["loc"][0]))
        hint = f"did you mean {guess}?" if guess else "see `inspector check-config --keys`"
        return f"unknown setting; {hint}"
    return str(err["msg"])


def parse_value(key: str, raw: str) -> Any:
    """A command-line ``KEY=VALUE``'s value, read by the setting's type.

    Text settings (``DeviceName``, topics, paths ...) take VALUE verbatim, so ``1234`` or ``on``
    stay text; numbers, booleans and lists are read as YAML (``16``, ``true``/``on``,
    ``[jpg, png]``); a list may also be given as ``jpg,png``. Unknown keys are read as YAML
    (the settings model then names the closest valid key).
    """
    import yaml

    field = Settings.model_fields.get(key)
    if field is not None and field.annotation is str:
        return raw
    if not raw.strip():
        return ""
    if field is not None and str(field.annotation).startswith("tuple") and not (
        raw.lstrip().startswith("[")
    ):
        return raw  # "jpg, png": split by the model
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}={raw!r}: not valid YAML: {exc}", [(key, str(exc))]) from exc


def settings_only(data: Mapping[str, Any]) -> dict[str, Any]:
    """The mapping without Greengrass' own keys (``accessControl``)."""
    return {k: v for k, v in data.items() if str(k).lower() not in RESERVED_KEYS}


def _key_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "<root>"


def _summary(problems: list[tuple[str, str]]) -> str:
    lines = [f"{len(problems)} invalid setting(s):"]
    lines += [f"  {key}: {msg}" for key, msg in problems]
    return "\n".join(lines)


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a JSON or YAML settings file into a dict (not validated yet).

    Raises ``ConfigError`` when the file is missing or not a mapping. A component recipe, or a
    fragment whose settings sit under ``ComponentConfiguration.DefaultConfiguration`` or
    ``DefaultConfiguration``, is unwrapped, so a recipe can be checked as is.
    """
    import yaml  # YAML is a superset of JSON, but JSON files get JSON's error messages

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}", []) from exc
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path} is not valid {path.suffix[1:] or 'YAML'}: {exc}",
                          [("<file>", str(exc))]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of settings",
                          [("<root>", f"expected a mapping, got {type(data).__name__}")])
    if "RecipeFormatVersion" in data:  # a whole component recipe
        data = {"ComponentConfiguration": data.get("ComponentConfiguration") or {}}
    for wrapper in ("ComponentConfiguration", "DefaultConfiguration"):
        if set(data) == {wrapper} and isinstance(data[wrapper], dict):
            data = data[wrapper]
    return data


@dataclass(frozen=True)
class ServicePaths:
    """The folders and files the service uses, defaults filled in. Computed, never created."""

    watch: Path
    state: Path
    journal: Path
    done: Path
    failed: Path
    held: Path
    outbox: Path
    results: Path
    review: Path

    def own_folders(self) -> tuple[Path, ...]:
        """Folders the watcher must ignore even when they sit inside the watch directory."""
        return (self.state, self.done, self.failed, self.held, self.outbox, self.review)


def resolve_paths(settings: Settings) -> ServicePaths:
    watch = Path(settings.ImageDirectory).expanduser()
    state = Path(settings.StateDirectory).expanduser() if settings.StateDirectory else (
        watch / ".inspector"
    )

    def pick(value: str, default: Path) -> Path:
        return Path(value).expanduser() if value else default

    return ServicePaths(
        watch=watch,
        state=state,
        journal=state / "journal.jsonl",
        done=pick(settings.DoneDirectory, state / "done"),
        failed=pick(settings.FailedDirectory, state / "failed"),
        held=pick(settings.HeldDirectory, state / "held"),
        outbox=pick(settings.OutboxDirectory, state / "outbox"),
        results=pick(settings.ResultsFile, state / "results.jsonl"),
        review=pick(settings.ReviewDirectory, state / "review"),
    )


def example_yaml() -> str:
    """config/example.yaml: every setting with its default (or example) and its description,
    generated from this model (``inspector check-config --example``; a test keeps the committed
    file equal to it)."""
    import textwrap

    import yaml

    lines = [
        "# Settings of `inspector run --config config/example.yaml`: every key of the settings",
        "# model with its default. GENERATED by `inspector check-config --example` from",
        "# src/inspector/settings.py; do not edit by hand (a test compares the two). The keys are",
        "# the component recipe's DefaultConfiguration keys (Greengrass feeds the same model over",
        "# IPC). Every key is optional except ImageDirectory.",
    ]
    for name, info in Settings.model_fields.items():
        value = info.examples[0] if info.is_required() and info.examples else info.default
        if isinstance(value, tuple):
            value = list(value)
        rendered = yaml.safe_dump({name: value}, default_flow_style=True, width=10_000,
                                  sort_keys=False).strip()[1:-1]  # drop the {...}
        notes = _constraints(info)
        if info.is_required():
            notes.append("required")
        note = f" ({'; '.join(notes)})" if notes else ""
        lines.append("")
        lines += textwrap.wrap(f"{info.description or ''}{note}", width=98,
                               initial_indent="# ", subsequent_indent="# ")
        lines.append(rendered)
    return "\n".join(lines) + "\n"


def _constraints(info: Any) -> list[str]:
    """``>= 0``, ``<= 1``, ``one of: move, delete`` ... of a field, for the example file."""
    out = []
    symbols = {"Ge": ">=", "Gt": ">", "Le": "<=", "Lt": "<"}
    for item in info.metadata:
        kind = type(item).__name__
        if kind in symbols:
            bound = getattr(item, kind.lower())
            out.append(f"{symbols[kind]} {bound:g}" if isinstance(bound, float) else
                       f"{symbols[kind]} {bound}")
    choices = getattr(info.annotation, "__args__", ())
    if str(info.annotation).startswith("typing.Literal"):
        out.append("one of: " + ", ".join(map(str, choices)))
    return out


def describe() -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) for every setting, in declaration order."""
    rows = []
    for name, info in Settings.model_fields.items():
        annotation = info.annotation
        type_name = getattr(annotation, "__name__", None) or str(annotation)
        type_name = str(annotation).replace("typing.", "") if "[" in str(annotation) else type_name
        default = "(required)" if info.is_required() else json.dumps(
            list(info.default) if isinstance(info.default, tuple) else info.default
        )
        rows.append((name, type_name, default, info.description or ""))
    return rows
