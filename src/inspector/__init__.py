"""inspector: on-device scratch inspection of metal tags.

YOLOv8 on ONNX Runtime, run as an AWS IoT Greengrass v2 component or standalone.
"""

__version__ = "0.1.0"

RESULT_SCHEMA = "inspector.result/1"
