"""Optional on-device scoring with an int8 ONNX model; needs onnxruntime (the ``edge-onnx`` extra)."""
