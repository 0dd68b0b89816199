"""Soundness suite: instances with planted, attack-hidden counterexamples plus MILP-decided ones.

``nnverify soundness generate DIR`` writes a suite (``generate``); ``nnverify soundness run DIR``
runs a verifier CLI on it, or scores another tool's result files (``run``, launching through
``runner``). See README.md in this folder.
"""
