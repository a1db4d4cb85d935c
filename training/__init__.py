"""tierwise training: build the dataset, fine-tune, calibrate, export to ONNX, report."""
