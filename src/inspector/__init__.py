"""inspector: on-device scratch inspection of metal tags (YOLOv8 on ONNX Runtime, AWS IoT Greengrass v2)."""

__version__ = "0.1.0"

RESULT_SCHEMA = "inspector.result/1"
