"""``inspector run`` under Greengrass: the composition of the IPC-side service.

    rc = main(overrides, drain=False)   # from ``inspector run`` when the nucleus environment
                                        # is present; overrides: its flags and --set

1. Connect to the nucleus (IpcClient with the real client from ``clients.connect_ipc``).
2. GetConfiguration -> Settings (the command line's flags and --set laid over it).
3. Sinks: MQTT results (spooled), S3 uploads through StreamManager, latency for the metrics.
4. ``build_service`` loads (and verifies) the model; subscriptions for validation and live
   updates; metrics thread; UpdateState RUNNING; run until SIGTERM.

A fatal error (invalid configuration, a model that cannot be loaded or whose sha256 differs from
the model component's) is logged, reported with UpdateState ERRORED, and the process exits
non-zero: 2 configuration, 3 model, 5 no nucleus, 6 results that could not be made durable for
``SinkStallSeconds`` (the images are kept: in the watch folder, held, or spooled), 1 anything
else.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from inspector.diskspace import MIB
from inspector.drift import DriftSink
from inspector.errors import ConfigError, IpcError, IpcUnavailable, ModelError
from inspector.greengrass.config import ConfigSource, access_problems, read_access_control
from inspector.greengrass.ipc import IpcClient
from inspector.greengrass.metrics import LatencySink, MetricsPublisher, collect_metrics
from inspector.greengrass.spool import Spool
from inspector.greengrass.streams import S3Uploader
from inspector.greengrass.updates import UpdateDeferrer
from inspector.service import EXIT_STALLED, build_service, device_name
from inspector.settings import Settings, resolve_paths
from inspector.sinks.mqtt import MqttSink, render_topic
from inspector.sinks.review import (
    ACCEPT_WITHIN_S,
    REVIEW_DATA_STREAM,
    REVIEW_STATUS_STREAM,
    ReviewSink,
)
from inspector.sinks.upload import UploadSink

logger = logging.getLogger(__name__)

EXIT_CONFIG = 2
EXIT_MODEL = 3
EXIT_NO_NUCLEUS = 5
EXIT_CRASH = 1
CONNECT_WAIT_S = 30.0


def main(overrides: Mapping[str, Any], *, drain: bool = False) -> int:
    """``overrides``: the settings the command line sets, laid over the component configuration
    (the ``run`` verb parses them; this module never reads argv)."""
    from inspector.greengrass.clients import connect_ipc

    ipc = IpcClient(connect_ipc)
    try:
        ipc.start(wait_s=CONNECT_WAIT_S)
    except IpcUnavailable as exc:
        logger.error("%s; is this running as a Greengrass component?", exc)
        return EXIT_NO_NUCLEUS
    try:
        return Component(ipc, os.environ, overrides=overrides, drain=drain).run()
    finally:
        ipc.close()


def thing_name_of(environ: Mapping[str, str]) -> str:
    return environ.get("AWS_IOT_THING_NAME", "")


def thing_name(settings: Settings, environ: Mapping[str, str]) -> str:
    return environ.get("AWS_IOT_THING_NAME") or device_name(settings, environ)


class Component:
    """One run of the service under Greengrass; ``ipc`` is connected and owned by the caller."""

    def __init__(
        self,
        ipc: IpcClient,
        environ: Mapping[str, str],
        *,
        overrides: Mapping[str, Any] | None = None,
        drain: bool = False,
    ) -> None:
        self.ipc = ipc
        self.environ = dict(environ)
        self.drain = drain
        self.config = ConfigSource(ipc, apply=self._apply, overrides=overrides,
                                   thing_name=thing_name_of(environ))
        self.service: Any = None
        self.metrics: MetricsPublisher | None = None
        self.updates: UpdateDeferrer | None = None
        self.thing = ""

    def run(self) -> int:
        from inspector.greengrass.clients import stream_manager_client

        try:
            settings = self.config.read()
        except ConfigError as exc:
            return self._fatal(EXIT_CONFIG, f"invalid configuration: {exc}")
        except IpcError as exc:
            return self._fatal(EXIT_CONFIG, f"cannot read the component configuration: {exc}")
        paths = resolve_paths(settings)
        self.thing = thing_name(settings, self.environ)
        self.config.thing_name = self.thing
        mqtt = MqttSink(
            self.ipc,
            Spool(paths.state / "spool", max_items=settings.SpoolMaxMessages,
                  max_bytes=int(settings.SpoolMaxMegabytes * MIB)),
            thing_name=self.thing,
            target=settings.PublishTarget, iot_topic=settings.PublishResultsOnTopic,
            pubsub_topic=settings.PubSubTopic,
        )
        uploader = S3Uploader(stream_manager_client)  # its retry limits: set by UploadSink
        upload = UploadSink(uploader, bucket=settings.UploadBucket,
                            key_template=settings.UploadKeyTemplate,
                            max_retries=settings.UploadMaxRetries,
                            retry_hours=settings.UploadRetryHours)
        latency = LatencySink()
        # review uploads (UncertainUpload): best effort, their own streams, no retries, dropped
        # when StreamManager has not taken them within ACCEPT_WITHIN_S
        review_uploader = S3Uploader(stream_manager_client, max_retries=0, retry_window_s=0.0,
                                     data_stream=REVIEW_DATA_STREAM,
                                     status_stream=REVIEW_STATUS_STREAM,
                                     accept_within_s=ACCEPT_WITHIN_S, log_failures=False)
        review = ReviewSink(paths.review, settings, uploader=review_uploader, thing=self.thing)
        drift = DriftSink(settings.UncertainBand)
        try:
            self.service = build_service(settings,
                                         sinks=[mqtt, upload, review, latency, drift],
                                         drain=self.drain, environ=self.environ, paths=paths)
        except ModelError as exc:
            return self._fatal(EXIT_MODEL, f"cannot load the model: {exc}")
        except ConfigError as exc:
            return self._fatal(EXIT_CONFIG, str(exc))
        # from here on SIGTERM stops gracefully: the nucleus may stop the component at any
        # moment once it exists, e.g. right as it reports RUNNING (run() then returns at once)
        self.service.install_signal_handlers()
        try:
            self.service.check_watch()  # before the sinks' threads start
        except ConfigError as exc:
            return self._fatal(EXIT_CONFIG, str(exc))
        self._check_access(settings)
        mqtt.start()
        self.ipc.on_reconnect(mqtt.wake)
        uploader.start()
        review_uploader.start()

        # deployments wait until the images in flight are delivered (greengrass/updates.py)
        updates = self.updates = UpdateDeferrer(self.ipc, self.service.pipeline.active)

        def extra() -> dict[str, Any]:
            return {
                "results_spooled": mqtt.pending(),
                "dead_letters": mqtt.dead_letters,
                "uploads": {"pending": uploader.pending(), "uploaded": uploader.uploaded,
                            "failed": uploader.failed, "retried": uploader.retried},
                "config": {"applied": self.config.applied, "rejected": self.config.rejected},
                "updates": {"deferred": updates.deferred, "released": updates.released},
            }

        self.metrics = MetricsPublisher(
            self.ipc, lambda: collect_metrics(self.service, latency, extra=extra, drift=drift,
                                              review=review),
            topic=self._metrics_topic(settings), interval_s=settings.MetricsIntervalSeconds,
        ).start()
        self.config.start()  # a subscription the nucleus does not answer yet is retried
        updates.start()
        self._report("RUNNING")
        try:
            report = self.service.run()
        except ConfigError as exc:
            return self._fatal(EXIT_CONFIG, str(exc))
        except Exception as exc:
            logger.exception("the service failed")
            return self._fatal(EXIT_CRASH, f"the service failed: {exc!r}")
        finally:
            self.metrics.close()
            self.config.close()
            uploader.close()
            review_uploader.close()
        if report.stopped_by == "stalled":
            return self._fatal(EXIT_STALLED, report.exit_message(self.service.paths.watch))
        return 0

    def _check_access(self, settings: Settings) -> None:
        """Start-up: an ERROR for every topic the component's own accessControl does not allow
        (the nucleus would refuse those publishes; results would be dead-lettered)."""
        try:
            access = read_access_control(self.ipc)
        except IpcError as exc:
            logger.warning("cannot read this component's accessControl to check the topics: %s",
                           exc)
            return
        for key, message in access_problems(settings, access, self.thing):
            logger.error("%s: %s; results published there are refused by the nucleus and kept "
                         "in the dead-letter file", key, message)

    def _metrics_topic(self, settings: Settings) -> str:
        return render_topic(settings.MetricsTopic, self.thing) if settings.MetricsTopic else ""

    def _apply(self, settings: Settings) -> None:
        if self.service is None:
            return
        restart = self.service.apply_settings(settings)
        if self.metrics is not None:
            self.metrics.configure(topic=self._metrics_topic(settings),
                                   interval_s=settings.MetricsIntervalSeconds)
        if restart:
            logger.warning("these settings take effect after a restart of the component: %s",
                           ", ".join(sorted(restart)))

    def _report(self, state: str) -> None:
        try:
            self.ipc.update_state(state)
            logger.info("reported state %s to the nucleus", state)
        except IpcError as exc:
            logger.error("cannot report state %s: %s", state, exc)

    def _fatal(self, code: int, message: str) -> int:
        logger.error("fatal: %s", message)
        self._report("ERRORED")
        return code
