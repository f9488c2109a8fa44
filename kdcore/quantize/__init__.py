"""Deployable students: ONNX export and int8 quantization, evaluated in the runtime that ships them.

- `onnx_export`: a model to ONNX (torch.export capture, one file, a dynamic batch dimension), and an
  ONNX model to int8 QDQ by onnxruntime's static quantization, calibrated on the student's own
  transfer images.
"""

import logging


class _EnumRegistrationNotice(logging.Filter):
    """torch 2.14 logs a deprecation notice each time torchao (0.18) registers one of its Enums as a
    pytree constant: two lines on every quantize run that a user can do nothing about. Only that notice
    is dropped; every other torch log line passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "register_constant() on Enum subclasses is deprecated" not in record.getMessage()


logging.getLogger("torch.utils._pytree").addFilter(_EnumRegistrationNotice())
