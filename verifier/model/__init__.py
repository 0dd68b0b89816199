"""ONNX networks lowered to the canonical graph.

The names below load on first use, so that ``verifier.model.onnx_file`` (ONNX parsing and its
safety checks: numpy and onnx only) can be imported without torch, e.g. by the service's API.
"""
import importlib

_WHERE = {"Graph": "graph", "Node": "node", "ONNX_OPS": "onnx_loader", "Model": "onnx_loader",
          "ModelLoadError": "onnx_file", "UnsupportedModelError": "onnx_file", "load_onnx": "onnx_loader",
          "load_onnx_bytes": "onnx_loader"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    """Import the submodule that defines ``name`` when it is first asked for."""
    if name not in _WHERE:
        raise AttributeError(f"module 'verifier.model' has no attribute {name!r}")
    return getattr(importlib.import_module(f"verifier.model.{_WHERE[name]}"), name)
