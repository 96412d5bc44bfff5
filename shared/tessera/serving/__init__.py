"""Serving: ONNX models under onnxruntime only, the caches that keep them loaded, API input
parsing, and the embedding index behind similarity search."""
