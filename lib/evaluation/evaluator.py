"""One evaluation loop for the trainer and valid.py: logits for a whole split, DDP-sharded."""
import contextlib

import torch
from torch.nn import functional as F

from ..utils import distributed as dist_utils
from .calibration import scale
from .metrics import classification_report


def predict_batch(model, method, batch, flip_tta=False):
    """method.predict of one batch: {"logits": B x C, "members": {...}}; with flip_tta the mean with the
    horizontally flipped images. The one prediction of valid.py, tools/predict.py and the exported model."""
    pred = method.predict(model(batch))
    if flip_tta:
        flipped = method.predict(model(dict(batch, image=batch["image"].flip(3))))
        pred = {"logits": (pred["logits"] + flipped["logits"]) / 2,
                "members": {k: (v + flipped["members"][k]) / 2 for k, v in pred["members"].items()}}
    return pred


@torch.no_grad()
def predict_split(model, method, loader, device, autocast=None, flip_tta=False, channels_last=False):
    """Run `model` (possibly wrapped) over `loader`; return (logits, labels, {member: logits}, loss).

    Under DDP each rank sees its shard (loader built with an index-sharded sampler) and the
    results are gathered back into dataset order."""
    model.eval()
    all_logits, all_labels, all_index, members, loss_sum = [], [], [], {}, 0.0
    ctx = autocast or contextlib.nullcontext
    for batch in loader:
        batch = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
        if channels_last:
            batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
        with ctx():
            pred = predict_batch(model, method, batch, flip_tta)
        logits = pred["logits"].float()
        loss_sum += F.cross_entropy(logits, batch["label"], reduction="sum").item()
        all_logits.append(logits.cpu())
        all_labels.append(batch["label"].cpu())
        all_index.append(batch["index"].cpu())
        for k, v in pred["members"].items():
            members.setdefault(k, []).append(v.float().cpu())
    logits, labels, index = torch.cat(all_logits), torch.cat(all_labels), torch.cat(all_index)
    members = {k: torch.cat(v) for k, v in members.items()}
    if dist_utils.is_distributed():
        dev = device if device.type == "cuda" else torch.device("cpu")
        index = dist_utils.all_gather_cat(index.to(dev)).cpu()
        logits = dist_utils.all_gather_cat(logits.to(dev)).cpu()
        labels = dist_utils.all_gather_cat(labels.to(dev)).cpu()
        members = {k: dist_utils.all_gather_cat(v.to(dev)).cpu() for k, v in members.items()}
        loss_sum = dist_utils.all_reduce_sum(torch.tensor([loss_sum], device=dev)).item()
    order = index.argsort()
    logits, labels = logits[order], labels[order]
    members = {k: v[order] for k, v in members.items()}
    return logits, labels, members, loss_sum / max(len(labels), 1)


def adjust_logits(logits, counts, tau):
    """Post-hoc logit adjustment z_c - tau * log(pi_c), pi_c = n_c / N (CADEL stage two, Menon et al.)."""
    if not tau:
        return logits
    prior = torch.tensor(counts, dtype=torch.float32, device=logits.device).clamp(min=1e-12)
    return logits - tau * (prior / prior.sum()).log()


def posthoc_logits(logits, counts, tau=0.0, temperature=1.0):
    """The reported prediction: (z - tau log pi) / T (TEST.LOGIT_ADJUST.TAU, TEST.TEMPERATURE)."""
    return scale(adjust_logits(logits, counts, tau), temperature)


def evaluate(model, method, loader, device, counts, rule="standard", autocast=None, flip_tta=False,
             logit_tau=0.0, channels_last=False, temperature=1.0):
    """Report for the main prediction (plus "members": a report per expert/head, and "loss" of the raw logits).
    `temperature` (fitted on the main prediction) scales the main prediction only."""
    logits, labels, members, loss = predict_split(model, method, loader, device, autocast, flip_tta, channels_last)
    report = classification_report(posthoc_logits(logits, counts, logit_tau, temperature), labels, counts, rule)
    report["loss"] = round(loss, 6)
    report["members"] = {k: classification_report(adjust_logits(v, counts, logit_tau), labels, counts, rule)
                         for k, v in members.items()}
    return report, logits, labels
