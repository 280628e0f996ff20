"""Batch reductions shared by the losses (docs/methods/baselines.md, "Losses").

Every loss takes an optional `sample_weight` s ∈ R^B (mixup / Remix label weights). It multiplies
each sample's term and leaves the denominator alone, so L(z, y_a; s) + L(z, y_b; 1 − s) is exactly
λ·L(z, y_a) + (1 − λ)·L(z, y_b) when s ≡ λ, for every loss and reduction.
"""
import torch


def weighted_mean(per_sample, target, class_weight=None, sample_weight=None):
    """BoT/PyTorch weighted mean  Σ_i s_i·w_{y_i}·l_i / Σ_i w_{y_i}  (w = None: plain mean over B).

    per_sample: (B,) unweighted per-sample losses l_i; class_weight: (C,) w_c or None."""
    terms = per_sample
    if sample_weight is not None:
        terms = terms * sample_weight.to(terms.dtype)
    if class_weight is None:
        return terms.mean()
    w = class_weight.to(per_sample.dtype)[target]
    return (w * terms).sum() / w.sum()


def batch_mean(per_sample, sample_weight=None):
    """(1/B)·Σ_i s_i·l_i: the reduction of losses that are not a weighted CE (focal, smoothing, SEQL, IB)."""
    if sample_weight is not None:
        per_sample = per_sample * sample_weight.to(per_sample.dtype)
    return per_sample.mean()


def one_hot(target, num_classes, dtype=torch.float32):
    return torch.nn.functional.one_hot(target, num_classes).to(dtype)
