"""ConvScope: see what a CNN does. Serving code: ONNX Runtime, numpy, PIL and Gradio; no torch."""

import os

# ONNX Runtime's telemetry looks up a Microsoft host each time a session is created unless this is
# set before onnxruntime is imported (disable_telemetry_events() is not enough); every ConvScope
# module that imports onnxruntime is imported after this package.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
