"""Pytrees of tensors: a tensor, or tuples, lists and mappings of them (nested), as batches, model
outputs and inputs come. The one place that walks them, so that every layer reads the same leaves in
the same order (mapping insertion order, then position)."""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch


def tree_map(fn: Callable[[torch.Tensor], Any], tree):
    """``fn`` applied to every tensor leaf of a tensor / tuple / list / dict tree (dicts become plain
    dicts, namedtuples keep their type)."""
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, Mapping):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(tree_map(fn, v) for v in tree))
    if isinstance(tree, (tuple, list)):
        return type(tree)(tree_map(fn, v) for v in tree)
    return tree


def tree_leaves(tree, prefix: str = "") -> list[tuple[str, torch.Tensor]]:
    """``[(path, tensor), ...]``, the path as ``prefix`` followed by ``['key']`` / ``[i]`` steps (for
    messages that name a leaf)."""
    if isinstance(tree, torch.Tensor):
        return [(prefix, tree)]
    if isinstance(tree, Mapping):
        return [leaf for k, v in tree.items() for leaf in tree_leaves(v, f"{prefix}[{k!r}]")]
    if isinstance(tree, (tuple, list)):
        return [leaf for i, v in enumerate(tree) for leaf in tree_leaves(v, f"{prefix}[{i}]")]
    return []


def tensor_leaves(tree) -> list[torch.Tensor]:
    """The tensors of ``tree``, in ``tree_leaves``'s order, without building paths: it runs for every
    torch call a per-sample guard sees, where the paths' strings would cost more than the walk."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, (tuple, list)):
        return [t for v in tree for t in tensor_leaves(v)]
    if isinstance(tree, Mapping):
        return [t for v in tree.values() for t in tensor_leaves(v)]
    return []


__all__ = ["tree_map", "tree_leaves", "tensor_leaves"]


#: the names a dict batch's targets go by, lower-cased (`likely_target_key`)
TARGET_NAMES = ("labels", "label", "targets", "target", "y", "y_true", "label_ids", "class", "classes", "class_id",
                "class_ids", "cls", "gt", "ground_truth", "answer", "answers")


def likely_target_key(keys) -> str | None:
    """The key among ``keys`` (a dict batch's) that likely holds its targets: the first of `TARGET_NAMES` present,
    in any case ("Label", "Y"); None where none is. Named where the targets were not found under ``target_key``
    (re-trial s57: "Y", "label_ids", "gt" and "cls" were never suggested)."""
    by_name = {str(k).lower(): k for k in keys if isinstance(k, str)}
    return next((by_name[n] for n in TARGET_NAMES if n in by_name), None)
