"""Serving: the exported ONNX/OpenVINO scorer, its runtimes, the HTTP server and
predict's output files (layer 6)."""
