"""Top-k predictions of a trained run on a list of images, as CSV rows (tools/predict.py)."""
import csv
import io
import time

import torch

from ..engine.amp import AmpContext
from ..evaluation.evaluator import adjust_logits, posthoc_logits, predict_batch
from .inputs import ImageList, image_loader


def header(topk, member_names=()):
    cols = ["path"]
    for k in range(1, topk + 1):
        cols += [f"class_{k}", f"prob_{k}"]
    for m in member_names:
        cols += [f"{m}_class", f"{m}_prob"]
    return cols


def _top(probs, k, names):
    p, idx = probs.topk(k, dim=1)
    return [[(names[c], v) for c, v in zip(ci.tolist(), pi.tolist())] for ci, pi in zip(idx, p)]


def rows_of(paths, indices, logits, members, names, topk):
    """CSV rows for one batch: path, top-k (class, probability) of the prediction, top-1 of each member."""
    tops = _top(logits.softmax(dim=1), topk, names)
    member_tops = {m: _top(z.softmax(dim=1), 1, names) for m, z in members.items()}
    rows = []
    for j, i in enumerate(indices.tolist()):
        row = [paths[i]]
        for name, p in tops[j]:
            row += [name, f"{p:.6f}"]
        for m in members:
            name, p = member_tops[m][j][0]
            row += [name, f"{p:.6f}"]
        rows.append(row)
    return rows


@torch.no_grad()
def predict_paths(run, paths, batch_size, workers, topk=5, members=False, warn=print):
    """Predict every readable image of `paths` with `run` (a TrainedRun). Returns (CSV text, number predicted,
    [(path, error)], seconds). The prediction is the method's predict() (valid.py's), then (z - tau log pi) / T;
    members (z - tau log pi) without the temperature, as valid.py reports them."""
    cfg, method, device = run.cfg, run.method, run.device
    loader = image_loader(ImageList(paths, run.transform, cfg.COLOR_SPACE, cfg.DATASET.EXIF_TRANSPOSE),
                          batch_size, workers, pin_memory=device.type == "cuda")
    amp = AmpContext(cfg, device)
    topk = min(topk, len(run.class_names))
    out, writer, bad, done, member_names = io.StringIO(), None, [], 0, []
    start = time.perf_counter()
    for batch in loader:
        for i, msg in batch["errors"]:
            warn(f"warning: {msg} (skipped)")
            bad.append((paths[i], msg))
        if batch["image"] is None:
            continue
        with amp.autocast():
            pred = predict_batch(method, method, {"image": batch["image"].to(device, non_blocking=True)},
                                 cfg.TEST.FLIP_TTA)
        logits = posthoc_logits(pred["logits"].float().cpu(), run.counts, run.tau, run.temperature)
        mem = {k: adjust_logits(v.float().cpu(), run.counts, run.tau) for k, v in pred["members"].items()} \
            if members else {}
        if writer is None:
            member_names = list(mem)
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(header(topk, member_names))
        writer.writerows(rows_of(paths, batch["index"], logits, mem, run.class_names, topk))
        done += len(batch["index"])
    if writer is None:
        csv.writer(out, lineterminator="\n").writerow(header(topk))
    return out.getvalue(), done, bad, time.perf_counter() - start
