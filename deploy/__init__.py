"""Deployment building blocks: a student backbone to a verified ONNX file, and the model card beside it."""
