"""Audits of robustness claims: model + data + eps + claimed accuracy -> a report anyone can re-check.

Modules (import them directly; this package imports nothing, so torch-free callers stay torch-free):

* ``claim``  -- ``load_claim`` / ``claim_from_dict`` -> ``Claim``; ``ClaimError`` (torch-free)
* ``data``   -- dataset formats (.npz, folder of .npy) (torch-free)
* ``plan``   -- ``plan_items(claim)`` -> one ``AuditItem`` per (sample, eps) with its VNN-LIB (torch-free)
* ``report`` -- ``build_report`` (pure aggregation), ``write_report`` (JSON + self-contained HTML) (torch-free)
* ``extras`` -- ``Picture`` / ``Extras``: what the report draws besides counts (torch-free)
* ``html``   -- ``render_html``: the report as one self-contained page (torch-free; matplotlib)
* ``run``    -- ``run_audit``: verify every item locally, keep the evidence, write the report
* ``check``  -- ``audit_check``: re-check every kept certificate and counterexample
* ``tightness`` -- IBP tightness per layer (Mao et al.), CROWN and sampling estimates
* ``props``  -- audit datasets recovered from mnist_fc-style eps-ball properties
* ``cli``    -- ``nnverify audit``, ``audit-check``, ``audit-data``
"""
