"""tessera: handwritten sheets in, an MNIST-style dataset, ONNX models and predictions out."""
