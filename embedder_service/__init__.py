"""The embedder service: CLIP image and text towers on ONNX Runtime behind gRPC."""
