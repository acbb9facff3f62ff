"""Model export tooling: needs the [export] extra (torch, open_clip, onnx); never used to serve."""
