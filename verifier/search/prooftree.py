"""Turn a search's recorded splits and proved leaves into the certificate TREE (docs/certificate.md)."""
from __future__ import annotations


def split_tree(root: int, children: dict[int, tuple[dict, int, int]], leaves: dict[int, dict]) -> dict:
    """The nested tree below domain ``root``.

    ``children``: domain id -> (split dict, low/inactive child id, high/active child id);
    ``leaves``: domain id -> leaf dict. Built iteratively (proofs can be deep).
    """
    out: dict = {}
    stack = [(root, out)]
    while stack:
        ident, slot = stack.pop()
        if ident in children:
            split, low, high = children[ident]
            kids = [{}, {}]
            slot["split"] = split
            slot["children"] = kids
            stack.extend([(low, kids[0]), (high, kids[1])])
        else:
            slot["leaf"] = leaves[ident]
    return out
