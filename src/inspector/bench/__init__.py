"""``inspector bench``: measure the component on the machine it runs on and write a report.

- ``runner``: one run over every model x thread setting (``BenchOptions``, ``run_bench``)
- ``inprocess``: per-stage latency, raw session, the detector loop, a cProfile
- ``service``: the real service as a subprocess under the Greengrass emulators (burst, single
  images, start-up, RSS, soak) and the publish stage
- ``profiled``: ``inspector`` under cProfile in every thread (the service's burst profile)
- ``memory``: RSS of a fresh process per import and step
- ``nms``: our NMS against ``cv2.dnn.NMSBoxes`` (also used by ``benchmarks/bench_core.py``)
- ``reference`` / ``ultralytics_predict``: Ultralytics' predictor in another interpreter
- ``report``: goals, markdown, plots

Needs psutil (service memory) and, for plots, matplotlib: the ``bench`` extra.
"""
