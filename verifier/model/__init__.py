"""ONNX networks lowered to the canonical graph."""
from verifier.model.graph import Graph, Node
from verifier.model.onnx_loader import (ONNX_OPS, Model, ModelLoadError, UnsupportedModelError, load_onnx,
                                        load_onnx_bytes)

__all__ = ["Graph", "Node", "ONNX_OPS", "Model", "ModelLoadError", "UnsupportedModelError", "load_onnx",
           "load_onnx_bytes"]
