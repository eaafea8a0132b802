"""One inference path for evaluation, custom images, the speed tool and benchmarks.

``prepare_inference(model, backend, device, example_input)`` (:mod:`models.deploy.runners`)
returns a callable ``images -> main logits``. The package, one concept per module:

``outputs``   which output of a model is the main logits (``select_output``, ``MainOutput``)
``fold``      conv -> BatchNorm folding (``fold_batchnorm``, ``find_conv_bn_pairs``)
``onnx``      ONNX export of the main logits (``export_onnx``)
``runtimes``  onnxruntime sessions and providers
``runners``   the backends (eager, fused, onnxruntime, compile, auto) and ``prepare_inference``
``auto``      timing (``time_runner``) and the ``auto`` choice (``auto_candidates``)
"""
from models.deploy.auto import auto_candidates, choose_fastest, time_runner
from models.deploy.fold import count_batchnorms, find_conv_bn_pairs, fold_batchnorm
from models.deploy.onnx import export_onnx
from models.deploy.outputs import MainOutput, select_output
from models.deploy.runners import BACKENDS, PRECISIONS, InferenceRunner, prepare_inference
from models.deploy.runtimes import create_ort_session, onnxruntime_available, ort_providers

__all__ = [
    "BACKENDS", "PRECISIONS", "InferenceRunner", "MainOutput", "auto_candidates", "choose_fastest",
    "count_batchnorms", "create_ort_session", "export_onnx", "find_conv_bn_pairs", "fold_batchnorm",
    "onnxruntime_available", "ort_providers", "prepare_inference", "select_output", "time_runner",
]
