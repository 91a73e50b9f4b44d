"""The component as Greengrass runs it: ``python -m inspector run`` under the emulators.

One ``ServiceBench`` is one service process (one model, one thread setting) with the nucleus and
StreamManager emulators in this process (``inspector.testing.fixtures.running_greengrass``).
It measures, in this order: start-up to the first result (one image already waiting), the
latency of single images (file closed -> result acknowledged by the nucleus), a burst (files
renamed into the folder at once; first rename -> last result acknowledged) and, optionally, a
soak (RSS after every batch). A sampler thread reads the process' RSS throughout.

Times come from the emulator's own receipt stamps (``NucleusEmulator.calls[i].time_s``,
``time.monotonic()``), so polling never adds to a measurement.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inspector.bench.images import ImagePool, drop
from inspector.bench.timing import summarize
from inspector.integrity import sha256_file

logger = logging.getLogger(__name__)

COMPONENT = "com.example.InspectorBench"
THING = "bench-device"
RESULTS_TOPIC = "bench/{thingName}/results"
PUBLISH = "PublishToIoTCore"


class ServiceBenchError(RuntimeError):
    """The service did not start, died, or stopped publishing (the log tail says why)."""


def psutil_module() -> Any:
    try:
        import psutil
    except ModuleNotFoundError as exc:
        raise ServiceBenchError(
            "psutil is needed to read the service's memory: pip install 'inspector[bench]'"
        ) from exc
    return psutil


@dataclass
class RssSampler:
    """Samples a process' resident set size every ``interval_s`` on a daemon thread."""

    pid: int
    interval_s: float = 0.05
    samples: list[tuple[float, int]] = field(default_factory=list)  # (monotonic s, bytes)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> RssSampler:
        process = psutil_module().Process(self.pid)

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.samples.append((time.monotonic(), int(process.memory_info().rss)))
                except Exception:  # the process is gone
                    return
                self._stop.wait(self.interval_s)

        self._thread = threading.Thread(target=loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def now(self) -> int:
        return int(psutil_module().Process(self.pid).memory_info().rss)

    def between(self, t0: float, t1: float) -> list[int]:
        return [rss for t, rss in list(self.samples) if t0 <= t <= t1]

    def peak(self) -> int:
        return max((rss for _, rss in list(self.samples)), default=0)


def service_config(watch: Path, model: Path, threads: int, workers: int | None = None
                   ) -> dict[str, Any]:
    """The component configuration the nucleus emulator serves (uploads of defects included).
    ``workers``: InferenceWorkers; None leaves the component's default."""
    config: dict[str, Any] = {
        "ImageDirectory": str(watch),
        "ModelPath": str(model),
        "ModelSha256": sha256_file(model),
        "IntraOpThreads": threads,
        "StableSeconds": 0.2,
        "ProcessedAction": "delete",
        "PublishResultsOnTopic": RESULTS_TOPIC,
        "UploadBucket": "bench-defects",
        "MetricsIntervalSeconds": 0,
    }
    if workers is not None:
        config["InferenceWorkers"] = workers  # 0: one per core, sharing the session
    return config


class ServiceBench:
    """A running service under the emulators; use as a context manager (``running``)."""

    def __init__(self, gg: Any, proc: subprocess.Popen[bytes], watch: Path, log: Path,
                 started: float) -> None:
        self.gg = gg
        self.proc = proc
        self.watch = watch
        self.log = log
        self.started = started
        self.topic = RESULTS_TOPIC.replace("{thingName}", THING)
        self.rss = RssSampler(proc.pid).start()
        self._seen = 0  # results already handed out by ``_results_since``

    # --- results as the nucleus received them ------------------------------------------------

    def results(self) -> list[tuple[float, dict[str, Any]]]:
        """(receipt monotonic s, result) for every result published so far, in order."""
        out = []
        for call in list(self.gg.nucleus.calls):
            if call.operation == PUBLISH and call.request.get("topicName") == self.topic:
                payload = base64.b64decode(call.request.get("payload") or b"")
                out.append((call.time_s, json.loads(payload)))
        return out

    def count(self) -> int:
        return sum(1 for c in list(self.gg.nucleus.calls)
                   if c.operation == PUBLISH and c.request.get("topicName") == self.topic)

    def wait_results(self, total: int, *, stall_s: float = 60.0,
                     tick: Callable[[int], None] | None = None) -> None:
        """Until ``total`` results were published; raises when none came for ``stall_s``."""
        last, last_change = self.count(), time.monotonic()
        while last < total:
            if self.proc.poll() is not None:
                raise ServiceBenchError(f"the service exited ({self.proc.returncode}) after "
                                        f"{last} results:\n{self.log_tail()}")
            if time.monotonic() - last_change > stall_s:
                raise ServiceBenchError(f"no result for {stall_s:.0f} s ({last} of {total}):\n"
                                        f"{self.log_tail()}")
            time.sleep(0.02)
            now = self.count()
            if now != last:
                if tick is not None:
                    tick(now - last)
                last, last_change = now, time.monotonic()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text("utf-8", "replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # --- the measurements ---------------------------------------------------------------------

    def startup(self) -> dict[str, Any]:
        """Seconds from process start to RUNNING and to the first result (one image waiting)."""
        deadline = time.monotonic() + 120
        running_at = None
        while self.count() < 1:
            if running_at is None and "RUNNING" in self.gg.nucleus.states:
                running_at = time.monotonic()
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise ServiceBenchError(f"no first result (exit {self.proc.returncode}):\n"
                                        f"{self.log_tail()}")
            time.sleep(0.005)
        first_t = self.results()[0][0]
        return {
            "to_running_s": None if running_at is None else round(running_at - self.started, 3),
            "to_first_result_s": round(first_t - self.started, 3),
            "rss_after_first_mb": mb(self.rss.now()),
        }

    def single_latency(self, pool: ImagePool, count: int, pause_s: float = 0.3
                       ) -> list[tuple[float, float, str]]:
        """(ms from each file closed (written in place) to its result acknowledged, the
        service's own total ms for that image (decode + preprocess + inference + post), the
        verdict of the image before it).

        ``pause_s`` after each result: a camera's cadence, not an idle service. The previous
        verdict matters: a defect is held (moved out of the folder), and the watcher's events
        can wait behind that move (watchdog groups move events for up to 0.5 s).
        """
        latencies = []
        for i in range(count):
            name = f"single-{i:04d}.jpg"
            data = pool.path(i).read_bytes()
            before = self.count()
            with open(self.watch / name, "wb") as out:
                out.write(data)
            closed = time.monotonic()
            self.wait_results(before + 1)
            results = self.results()
            t, result = results[before]
            previous = str(results[before - 1][1].get("verdict")) if before else "none"
            if result["image"]["name"] != name:
                raise ServiceBenchError(f"expected the result of {name}, got "
                                        f"{result['image']['name']}")
            latencies.append(((t - closed) * 1000, float(result["timings_ms"]["total"]),
                              previous))
            time.sleep(pause_s)
        return latencies

    def burst(self, pool: ImagePool, staging: Path, count: int, prefix: str,
              tick: Callable[[int], None] | None = None) -> dict[str, Any]:
        """``count`` files renamed into the folder at once; throughput and per-result timings."""
        files = pool.copies(staging, prefix, count)
        psutil = psutil_module()
        process = psutil.Process(self.proc.pid)
        before = self.count()
        cpu0 = process.cpu_times()
        t0 = time.monotonic()
        drop(files, self.watch)
        self.wait_results(before + count, tick=tick)
        cpu1 = process.cpu_times()
        results = self.results()[before:before + count]
        t_last = results[-1][0]
        seconds = t_last - t0
        cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        stages = {key: summarize([r["timings_ms"][key] for _, r in results if key in
                                  r.get("timings_ms", {})])
                  for key in ("decode", "preprocess", "inference", "postprocess", "total")}
        settle_end = time.monotonic() + 1.0
        time.sleep(1.0)  # idle: the steady RSS
        steady = _median(self.rss.between(settle_end - 1.0, settle_end))
        return {
            "images": count,
            "seconds": round(seconds, 3),
            "images_per_s": round(count / seconds, 3) if seconds > 0 else None,
            "first_result_s": round(results[0][0] - t0, 3),
            "service_cpu_s": round(cpu_s, 3),
            "service_cpu_cores": round(cpu_s / seconds, 2) if seconds > 0 else None,
            "stages_ms": stages,
            "defects": sum(1 for _, r in results if r.get("verdict") == "defect"),
            "rss_peak_mb": mb(max(self.rss.between(t0, t_last), default=0)),
            "rss_steady_mb": None if steady is None else mb(steady),
        }

    def soak(self, pool: ImagePool, staging: Path, count: int, batch: int = 100,
             tick: Callable[[int], None] | None = None) -> dict[str, Any]:
        """``count`` images in batches; the RSS after every batch (settled)."""
        points = []
        done = 0
        while done < count:
            n = min(batch, count - done)
            self.burst_quiet(pool, staging, n, f"soak{done:06d}", tick)
            done += n
            time.sleep(0.3)
            points.append({"images": done, "rss_mb": mb(self.rss.now())})
        return {"images": count, "batch": batch, "rss_after_mb": points[-1]["rss_mb"],
                **soak_growth(points), "rss_peak_mb": mb(self.rss.peak()), "points": points}

    def burst_quiet(self, pool: ImagePool, staging: Path, count: int, prefix: str,
                    tick: Callable[[int], None] | None = None) -> None:
        files = pool.copies(staging, prefix, count)
        before = self.count()
        drop(files, self.watch)
        self.wait_results(before + count, tick=tick)

    def profile_burst(self, pool: ImagePool, staging: Path, count: int, profile: Path,
                      top: int = 15, tick: Callable[[int], None] | None = None
                      ) -> dict[str, Any]:
        """Under ``running(..., profile_to=profile)``: a burst profiled from just before the
        drop to the process' exit; the top functions by own time, blocking waits left out."""
        import pstats

        from inspector.bench.inprocess import top_functions

        self.proc.send_signal(signal.SIGUSR1)
        time.sleep(0.2)  # let the handler clear the start-up's figures
        self.burst_quiet(pool, staging, count, "profiled", tick)
        self.stop()
        if not profile.exists():
            raise ServiceBenchError(f"no profile written:\n{self.log_tail()}")
        stats = pstats.Stats(str(profile))
        return {"images": count, "top": top_functions(stats, top, skip_blocking=True)}

    def stop(self) -> int | None:
        self.rss.stop()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@contextmanager
def running(work: Path, model: Path, threads: int, first_image: Path,
            workers: int | None = None,
            extra_env: dict[str, str] | None = None, profile_to: Path | None = None
            ) -> Iterator[ServiceBench]:
    """The emulators and a service process on ``work/watch``, with ``first_image`` waiting.

    ``profile_to``: run it under ``inspector.bench.profiled`` (cProfile in every thread from
    SIGUSR1 to exit, written there)."""
    from inspector.testing.fixtures import running_greengrass

    watch = _prepare_watch(work, first_image)
    log = work / "service.log"
    with running_greengrass(work, config=service_config(watch, model, threads, workers),
                            component_name=COMPONENT, thing_name=THING) as gg:
        env = {**os.environ, **gg.env, "AWS_IOT_THING_NAME": THING, "PYTHONUNBUFFERED": "1",
               "ORT_DISABLE_TELEMETRY": "1", **(extra_env or {})}
        with open(log, "wb") as out:
            started = time.monotonic()
            entry = ["inspector"] if profile_to is None else [
                "inspector.bench.profiled", str(profile_to)]
            proc = subprocess.Popen([sys.executable, "-u", "-m", *entry, "run"], env=env,
                                    stdout=out, stderr=subprocess.STDOUT, cwd=work)
        bench = ServiceBench(gg, proc, watch, log, started)
        try:
            yield bench
        finally:
            bench.stop()


def _prepare_watch(work: Path, first_image: Path) -> Path:
    """``work/watch`` with ``first_image`` waiting in it as ``startup.jpg``; psutil checked
    first, so nothing is started without it."""
    psutil_module()
    work.mkdir(parents=True, exist_ok=True)
    watch = work / "watch"
    watch.mkdir(exist_ok=True)
    waiting = watch / "startup.jpg"
    waiting.write_bytes(first_image.read_bytes())
    old = time.time() - 60
    os.utime(waiting, (old, old))  # already stable: the start-up scan takes it at once
    return watch


def publish_ms(inspection: Any, result: dict[str, Any], repeats: int, work: Path
               ) -> list[float]:
    """The service's per-result publish path, timed in this process against the emulator: the
    real ``MqttSink`` (fit the payload, spool it fsynced, its publisher thread's
    PublishToIoTCore until acknowledged, unspool), from ``send`` until the spool is empty."""
    from inspector.bench.timing import sample_ms
    from inspector.greengrass.clients import connect_ipc
    from inspector.greengrass.ipc import IpcClient
    from inspector.greengrass.spool import Spool
    from inspector.sinks.base import Delivery
    from inspector.sinks.mqtt import MqttSink
    from inspector.testing.fixtures import running_nucleus

    class Watched(Spool):
        """The real spool, saying when the publisher thread unspooled a message."""

        emptied = threading.Event()

        def remove(self, entry_id: int) -> None:
            super().remove(entry_id)
            self.emptied.set()

    work.mkdir(parents=True, exist_ok=True)
    with running_nucleus(work, component_name=COMPONENT, thing_name=THING) as nucleus, \
            _environ(nucleus.env):
        ipc = IpcClient(connect_ipc)
        ipc.start(wait_s=10)
        spool = Watched(work / "spool")
        sink = MqttSink(ipc, spool, thing_name=THING, iot_topic=RESULTS_TOPIC).start()
        try:
            def once() -> None:
                spool.emptied.clear()
                sink.send(Delivery(result, inspection, work / "image.jpg"))
                if not spool.emptied.wait(10.0):
                    raise ServiceBenchError("a result was not acknowledged within 10 s")

            return sample_ms(once, repeats, warmup=3)
        finally:
            sink.close(timeout_s=2.0)
            ipc.close()


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def soak_growth(points: list[dict[str, Any]]) -> dict[str, Any]:
    """RSS growth over a soak: the median of the last five settled points minus that of the
    first five. The settled RSS moves by a few MB from batch to batch by design (each run hands
    its arena memory back, large buffers are unmapped), so one point against another measures
    that jitter, not growth; a leak moves the medians."""
    rss = [p["rss_mb"] for p in points]
    k = max(1, min(5, len(rss) // 2))
    first, last = sorted(rss[:k])[k // 2], sorted(rss[-k:])[k // 2]
    return {"rss_growth_mb": round(last - first, 2),
            "rss_growth_from": f"median of the last {k} points vs the first {k} "
                               f"(one after each {points[0]['images']} images)"}


def mb(rss_bytes: float) -> float:
    return round(rss_bytes / 2**20, 2)


def _median(values: list[int]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[len(ordered) // 2])


class StandaloneBench(ServiceBench):
    """``inspector run`` standalone (no Greengrass): JSONL results, the outbox with annotated
    copies (AnnotateOutbox, the default). Results are counted from the JSONL file as it grows."""

    def __init__(self, proc: subprocess.Popen[bytes], watch: Path, log: Path, started: float,
                 results_file: Path) -> None:
        super().__init__(None, proc, watch, log, started)
        self.results_file = results_file
        self._offset = 0
        self._lines = 0

    def count(self) -> int:
        try:
            with open(self.results_file, "rb") as stream:
                stream.seek(self._offset)
                chunk = stream.read()
        except FileNotFoundError:
            return 0
        complete = chunk.rfind(b"\n") + 1  # a line still being written is not counted yet
        self._lines += chunk[:complete].count(b"\n")
        self._offset += complete
        return self._lines

    def results(self) -> list[tuple[float, dict[str, Any]]]:
        raise NotImplementedError("the standalone bench counts results only")

    def startup(self) -> dict[str, Any]:
        deadline = time.monotonic() + 120
        while self.count() < 1:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise ServiceBenchError(f"no first result (exit {self.proc.returncode}):\n"
                                        f"{self.log_tail()}")
            time.sleep(0.005)
        return {"to_running_s": None,
                "to_first_result_s": round(time.monotonic() - self.started, 3),
                "rss_after_first_mb": mb(self.rss.now())}


@contextmanager
def running_standalone(work: Path, model: Path, first_image: Path, **settings: Any
                       ) -> Iterator[StandaloneBench]:
    """``python -m inspector run --config`` on ``work/watch`` with the default settings (the
    outbox annotated), images deleted once inspected, the outbox kept to 50 MB by
    housekeeping; ``settings`` override."""
    import yaml

    watch = _prepare_watch(work, first_image)
    results = work / "results.jsonl"
    config = {"ImageDirectory": str(watch), "ModelPath": str(model),
              "ModelSha256": sha256_file(model), "StableSeconds": 0.2,
              "ProcessedAction": "delete", "ResultsFile": str(results),
              "StateDirectory": str(work / "state"), "OutboxMaxMegabytes": 50,
              "HousekeepingSeconds": 10, **settings}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    log = work / "service.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "ORT_DISABLE_TELEMETRY": "1"}
    for key in ("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", "SVCUID"):
        env.pop(key, None)
    with open(log, "wb") as out:
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-u", "-m", "inspector", "run", "--config",
                                 str(work / "config.yaml")], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=work)
    bench = StandaloneBench(proc, watch, log, started, results)
    try:
        yield bench
    finally:
        bench.stop()
