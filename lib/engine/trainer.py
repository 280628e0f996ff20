"""The shared trainer: one loop for every method (it only calls the contract in lib/methods/base.py).

Reads top to bottom: set up the run -> build data, method, optimizer -> resume -> for each
epoch: train_one_epoch, validate, checkpoint -> final evaluation on the test split.
"""
import os
import random
import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..data.build import DataSplits, eval_loader, train_loader
from ..evaluation.evaluator import evaluate
from ..evaluation.metrics import format_groups
from ..evaluation.reports import summary_table, write_evaluation
from ..methods import build_method
from ..utils.errors import UserError
from ..utils.logger import MetricWriter, setup_logger
from . import distributed as dist_utils
from .amp import AmpContext
from .checkpoint import (extract_state_dict, load_checkpoint, load_weights, rng_state, save_checkpoint,
                         set_rng_state, unwrap)
from .optim import EpochLR, build_optimizer
from .run_dir import prepare_run_dir, resolve_checkpoint


class NonFiniteLoss(UserError):
    pass


def seed_everything(seed, deterministic):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def to_device(batch, device, channels_last):
    out = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
    if channels_last:
        for k in ("image", "image2"):
            if k in out and out[k].dim() == 4:
                out[k] = out[k].contiguous(memory_format=torch.channels_last)
    return out


def wrap_model(cfg, method, device, log):
    """DataParallel over cfg.GPUS, or DDP under torchrun; SyncBN when asked."""
    if dist_utils.is_distributed():
        if cfg.TRAIN.SYNCBN:
            method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(method, device_ids=ids, find_unused_parameters=False)
    if device.type == "cuda" and len(cfg.GPUS) > 1:
        log.info(f"DataParallel over GPUs {list(cfg.GPUS)}")
        return nn.DataParallel(method, device_ids=list(cfg.GPUS))
    return method


def train_one_epoch(model, method, loader, optimizer, amp, device, epoch, cfg, log, writer):
    """One pass over `loader`; returns {"loss", "acc", "images_per_s", + the method's logs}."""
    model.train()
    show = cfg.SHOW_STEP
    sums = {"loss": 0.0, "correct": 0.0}
    extra, n_seen, skipped = {}, 0, 0
    start = time.time()
    bar = tqdm(loader, desc=f"epoch {epoch}/{cfg.TRAIN.MAX_EPOCH}", leave=False, dynamic_ncols=True,
               disable=not (dist_utils.is_main() and log.interactive))
    for it, batch in enumerate(bar, 1):
        batch = method.prepare_batch(to_device(batch, device, cfg.TRAIN.CHANNELS_LAST), epoch)
        with amp.autocast():
            outputs = model(batch)
            loss, logs = method.loss(outputs, batch, epoch)
        if not torch.isfinite(loss):
            if cfg.TRAIN.NONFINITE_LOSS == "skip":
                skipped += 1
                optimizer.zero_grad(set_to_none=True)
                continue
            raise NonFiniteLoss(f"non-finite loss {loss.item()} at epoch {epoch}, iteration {it}; stopping "
                                f"(the last good checkpoint is models/latest.pth; TRAIN.NONFINITE_LOSS skip skips such steps)")
        optimizer.zero_grad(set_to_none=True)
        amp.backward_and_step(loss, optimizer)
        method.after_optimizer_step()

        bs = batch["label"].shape[0]
        with torch.no_grad():
            pred = method.predict(outputs)["logits"].argmax(1)
        n_seen += bs
        sums["loss"] += loss.item() * bs
        sums["correct"] += (pred == batch["label"]).sum().item()
        for k, v in logs.items():
            extra[k] = extra.get(k, 0.0) + float(v) * bs
        ips = n_seen * dist_utils.world_size() / max(time.time() - start, 1e-9)
        lr = optimizer.param_groups[0]["lr"]
        bar.set_postfix(loss=f"{sums['loss'] / n_seen:.4f}", acc=f"{100 * sums['correct'] / n_seen:.2f}",
                        lr=f"{lr:.2e}", img_s=f"{ips:.0f}")
        if show and it % show == 0:
            log.info(f"epoch {epoch} iter {it}/{len(loader)} loss {sums['loss'] / n_seen:.4f} "
                     f"acc {100 * sums['correct'] / n_seen:.2f} lr {lr:.3e} {ips:.0f} img/s", console=not log.interactive)
    bar.close()
    totals = torch.tensor([sums["loss"], sums["correct"], float(n_seen), float(skipped)], dtype=torch.float64)
    totals = dist_utils.all_reduce_sum(totals.to(device) if device.type == "cuda" else totals).cpu()
    n = max(totals[2].item(), 1)
    result = {"loss": totals[0].item() / n, "acc": 100 * totals[1].item() / n,
              "images_per_s": totals[2].item() / max(time.time() - start, 1e-9), "skipped_steps": int(totals[3])}
    result.update({k: v / max(n_seen, 1) for k, v in extra.items()})
    return result


def train(cfg, resume="", auto_resume=False):
    """Run a whole training job from a frozen config; returns the final results dict (rank 0)."""
    device = dist_utils.choose_device(cfg)
    dist_utils.init_distributed(device)
    rank, world = dist_utils.rank(), dist_utils.world_size()
    seed_everything(cfg.SEED + rank, cfg.DETERMINISTIC)
    run_dir = prepare_run_dir(cfg, write=dist_utils.is_main())
    log = setup_logger(run_dir, "train", enabled=dist_utils.is_main())
    amp = AmpContext(cfg, device, log)
    log.info(f"run folder {run_dir}; device {device}; processes {world}; method {cfg.METHOD}")

    data = DataSplits(cfg)
    counts = data.counts
    if dist_utils.is_main():
        data.save_label_map(run_dir)
    log.info(f"train {len(data.train)} images, {data.num_classes} classes, max/min per class "
             f"{max(counts)}/{min(counts)}; valid {len(data.valid) if data.valid else 0}; "
             f"test {len(data.test) if data.test else 0}")

    method = build_method(cfg, counts)
    if cfg.NETWORK.PRETRAINED:
        path = resolve_checkpoint(cfg, cfg.NETWORK.PRETRAINED_MODEL, "NETWORK.PRETRAINED_MODEL")
        load_weights(method, extract_state_dict(load_checkpoint(path)), path)
        method.after_pretrained_loaded()
        log.info(f"initialised from {path}")
    method.to(device)
    if cfg.TRAIN.CHANNELS_LAST:
        method.to(memory_format=torch.channels_last)
    model = wrap_model(cfg, method, device, log)
    optimizer = build_optimizer(cfg, method)
    scheduler = EpochLR(cfg, optimizer)
    loader = train_loader(cfg, data.train, world, rank, cfg.SEED)
    valid_loader = eval_loader(cfg, data.valid, world, rank) if data.valid else None

    state = {"epoch": 0, "best_result": -1.0, "best_epoch": 0}
    ckpt_path = resume or (os.path.join(run_dir, "models", "latest.pth") if auto_resume or cfg.AUTO_RESUME else "")
    if not ckpt_path and cfg.RESUME_MODEL:
        ckpt_path = resolve_checkpoint(cfg, cfg.RESUME_MODEL, "RESUME_MODEL")
    if ckpt_path and (resume or cfg.RESUME_MODEL or os.path.isfile(ckpt_path)):
        state = restore(ckpt_path, cfg, method, optimizer, scheduler, amp, loader.sampler, log)
    elif ckpt_path:
        log.info(f"auto-resume: no checkpoint at {ckpt_path}, starting from scratch")

    writer = MetricWriter(run_dir, enabled=dist_utils.is_main() and cfg.TRAIN.TENSORBOARD.ENABLE)
    models_dir = os.path.join(run_dir, "models")
    for epoch in range(state["epoch"] + 1, cfg.TRAIN.MAX_EPOCH + 1):
        loader.sampler.set_epoch(epoch)
        loader.generator.manual_seed(cfg.SEED * 100003 + epoch)  # worker seeds depend on (seed, epoch) only
        scheduler.set_epoch(epoch)
        method.on_epoch_start(epoch)
        t0 = time.time()
        tr = train_one_epoch(model, method, loader, optimizer, amp, device, epoch, cfg, log, writer)
        tr.update(method.on_epoch_end(epoch) or {})
        lr = optimizer.param_groups[0]["lr"]
        writer.scalars(epoch, {"train/" + k: v for k, v in tr.items()}, lr)
        msg = (f"epoch {epoch}/{cfg.TRAIN.MAX_EPOCH} train loss {tr['loss']:.4f} acc {tr['acc']:.2f} "
               f"lr {lr:.3e} {tr['images_per_s']:.0f} img/s {time.time() - t0:.1f}s")
        if tr["skipped_steps"]:
            msg += f" skipped {tr['skipped_steps']} non-finite steps"
        valid_report = None
        if valid_loader and (epoch % cfg.VALID_STEP == 0 or epoch == cfg.TRAIN.MAX_EPOCH):
            valid_report, _, _ = evaluate(model, method, valid_loader, device, counts, cfg.TEST.SHOT_RULE,
                                          amp.autocast, channels_last=cfg.TRAIN.CHANNELS_LAST)
            writer.scalars(epoch, {"valid/" + k: valid_report[k] for k in ("top1", "loss", "many", "medium", "few")
                                   if valid_report[k] is not None})
            writer.pair(epoch, tr, valid_report)
            msg += f" | valid top1 {valid_report['top1']:.2f} {format_groups(valid_report)}"
        log.info(msg)
        is_best = valid_report is not None and valid_report["top1"] > state["best_result"]
        if is_best:
            state.update(best_result=valid_report["top1"], best_epoch=epoch)
        if dist_utils.is_main():
            payload = checkpoint_payload(cfg, method, optimizer, scheduler, amp, loader.sampler, epoch, state)
            save_checkpoint(os.path.join(models_dir, "latest.pth"), payload)
            if is_best:
                save_checkpoint(os.path.join(models_dir, "best_model.pth"), payload)
            if cfg.SAVE_STEP and epoch % cfg.SAVE_STEP == 0:
                save_checkpoint(os.path.join(models_dir, f"epoch_{epoch}.pth"), payload)
        dist_utils.barrier()
    writer.close()
    results = final_evaluation(cfg, model, method, data, device, amp, run_dir, state, log)
    dist_utils.cleanup()
    return results


def checkpoint_payload(cfg, method, optimizer, scheduler, amp, sampler, epoch, state):
    return {
        "state_dict": unwrap(method).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": amp.state_dict(),
        "sampler": sampler.state_dict() if hasattr(sampler, "state_dict") else {},
        "epoch": epoch,
        "best_result": state["best_result"],
        "best_epoch": state["best_epoch"],
        "rng": rng_state(),
        "method": cfg.METHOD,
        "config": cfg.dump(),
    }


def restore(path, cfg, method, optimizer, scheduler, amp, sampler, log):
    ckpt = load_checkpoint(path)
    if ckpt.get("method", cfg.METHOD) != cfg.METHOD:
        raise UserError(f"checkpoint {path} was trained with METHOD {ckpt.get('method')!r}, this config uses {cfg.METHOD!r}")
    load_weights(method, extract_state_dict(ckpt), path)
    if cfg.RESUME_MODE == "state_dict":
        log.info(f"loaded weights from {path} (RESUME_MODE state_dict: optimizer and epoch start fresh)")
        return {"epoch": 0, "best_result": -1.0, "best_epoch": 0}
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError) as e:
        raise UserError(f"checkpoint {path}: optimizer state does not fit this config ({e})") from None
    scheduler.load_state_dict(ckpt["scheduler"])
    amp.load_state_dict(ckpt.get("scaler") or {})
    if hasattr(sampler, "load_state_dict") and ckpt.get("sampler"):
        sampler.load_state_dict(ckpt["sampler"])
    if "rng" in ckpt:
        set_rng_state(ckpt["rng"])
    log.info(f"resumed from {path} at epoch {ckpt['epoch']} (best {ckpt['best_result']:.2f} at epoch {ckpt['best_epoch']})")
    return {"epoch": int(ckpt["epoch"]), "best_result": float(ckpt["best_result"]), "best_epoch": int(ckpt["best_epoch"])}


def final_evaluation(cfg, model, method, data, device, amp, run_dir, state, log):
    """Evaluate the test split (else valid) with the checkpoint chosen on VALID_JSON, else the last epoch."""
    split, dataset = ("test", data.test) if data.test else ("valid", data.valid)
    if dataset is None:
        log.info("no VALID_JSON or TEST_JSON: skipping evaluation")
        return {}
    selection = "last epoch"
    ckpt_epoch = cfg.TRAIN.MAX_EPOCH
    best = os.path.join(run_dir, "models", "best_model.pth")
    if data.valid is not None and data.test is not None and os.path.isfile(best):
        load_weights(method, extract_state_dict(load_checkpoint(best)), best)
        selection = f"best top-1 on VALID_JSON (epoch {state['best_epoch']})"
        ckpt_epoch = state["best_epoch"]
    elif data.valid is not None and data.test is None:
        selection = "last epoch (no TEST_JSON: evaluated on VALID_JSON)"
    loader = eval_loader(cfg, dataset, dist_utils.world_size(), dist_utils.rank())
    report, logits, labels = evaluate(model, method, loader, device, data.counts, cfg.TEST.SHOT_RULE, amp.autocast,
                                      flip_tta=cfg.TEST.FLIP_TTA, logit_tau=cfg.TEST.LOGIT_ADJUST.TAU,
                                      channels_last=cfg.TRAIN.CHANNELS_LAST)
    if not dist_utils.is_main():
        return {}
    meta = {"name": cfg.NAME, "method": cfg.METHOD, "split": split, "json": getattr(dataset, "json_path", ""),
            "checkpoint_selection": selection, "checkpoint_epoch": ckpt_epoch, "backbone": cfg.BACKBONE.TYPE,
            "epochs": cfg.TRAIN.MAX_EPOCH, "shot_rule": cfg.TEST.SHOT_RULE, "flip_tta": cfg.TEST.FLIP_TTA}
    results = write_evaluation(run_dir, report, logits, labels, data.counts, meta, cfg.TEST.SHOT_RULE,
                               data.class_names())
    log.info(f"{split} split, checkpoint: {selection}\n" + summary_table(report))
    return results

