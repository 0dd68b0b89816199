"""Soundness suite: instances with planted, attack-hidden counterexamples plus MILP-decided ones."""
