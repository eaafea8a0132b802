"""One inference path for evaluation, custom images, the speed tool and benchmarks.

``prepare_inference(model, backend, device, example_input)`` (:mod:`models.deploy.runners`)
returns a callable ``images -> main logits``. The package, one concept per module:

``outputs``   which output of a model is the main logits (``select_output``, ``MainOutput``)
``fold``      conv -> BatchNorm folding (``fold_batchnorm``, ``find_conv_bn_pairs``)
``onnx``      ONNX export of the main logits (``export_onnx``)
``runtimes``  onnxruntime (CPU, CUDA, TensorRT providers) and OpenVINO sessions
``runners``   the backends (eager, fused, onnxruntime, openvino, compile, auto), ``prepare_inference``
``onnx_file`` any PIDNet-like ONNX file (fp32/fp16/int8) checked and run (``prepare_onnx_file``)
``auto``      timing (``time_runner``) and the ``auto`` choice (``auto_candidates``)
``quantize``  int8 (onnxruntime QDQ or NNCF) / fp16 ONNX files, per-layer sensitivity, mixed
              precision (``tools/quantize.py``; imported on demand, not re-exported here)
"""
from models.deploy.auto import auto_candidates, choose_fastest, time_runner
from models.deploy.fold import count_batchnorms, find_conv_bn_pairs, fold_batchnorm
from models.deploy.onnx import export_onnx
from models.deploy.outputs import MainOutput, select_output
from models.deploy.runners import BACKENDS, PRECISIONS, InferenceRunner, prepare_inference
from models.deploy.runtimes import (RUNTIMES, check_runtime, compile_openvino, create_ort_session,
                                    onnxruntime_available, openvino_available, ort_providers)
from models.deploy.onnx_file import OnnxInfo, describe_onnx, prepare_onnx_file

__all__ = [
    "BACKENDS", "PRECISIONS", "RUNTIMES", "InferenceRunner", "MainOutput", "OnnxInfo", "auto_candidates",
    "check_runtime", "choose_fastest", "compile_openvino", "count_batchnorms", "create_ort_session",
    "describe_onnx", "export_onnx", "find_conv_bn_pairs", "fold_batchnorm", "onnxruntime_available",
    "openvino_available", "ort_providers", "prepare_inference", "prepare_onnx_file", "select_output",
    "time_runner",
]
