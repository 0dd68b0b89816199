"""ONNX networks lowered to the canonical graph."""
from verifier.model.graph import Graph, Node

__all__ = ["Graph", "Node"]
