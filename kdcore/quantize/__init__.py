"""Deployable students: ONNX export and int8 quantization, evaluated in the runtime that ships them.

- `onnx_export`: a model to ONNX (torch.export capture, one file, a dynamic batch dimension), and an
  ONNX model to int8 QDQ by onnxruntime's static quantization, calibrated on the student's own
  transfer images.
"""
