"""The shared trainer: one loop for every method (it only calls the contract in lib/methods/base.py).

train() reads top to bottom: build (data, method, optimizer) -> resume (engine/checkpointer.py, the
owner of the training state) -> open the run folder -> each epoch: train, validate and select, save ->
final evaluation on the test split. Everything that can fail on bad input fails before the run folder
is written.
"""
import dataclasses
import os
import random
import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..config import notices
from ..data.build import DataSplits, eval_loader, train_loader
from ..evaluation.evaluator import evaluate
from ..evaluation.metrics import format_groups
from ..evaluation.reports import summary_table, write_evaluation
from ..methods import build_method
from ..utils.errors import UserError
from ..utils.logger import MetricWriter, RunLogger
from ..utils import distributed as dist_utils
from ..utils.seeding import derive_seed
from .amp import AmpContext
from .checkpoint import extract_state_dict, last_good_state, load_checkpoint, load_weights
from .checkpointer import Checkpointer, init_from_pretrained
from .optim import LRSchedule, build_optimizer
from .preemption import Preempted, Preemption
from .run_dir import archive_previous_run, prepare_run_dir, run_dir_of


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
        return nn.parallel.DistributedDataParallel(method, device_ids=ids)
    if device.type == "cuda" and len(cfg.GPUS) > 1:
        log.info(f"DataParallel over GPUs {list(cfg.GPUS)}")
        return nn.DataParallel(method, device_ids=list(cfg.GPUS))
    return method


def train_step(model, method, batch, optimizer, amp, epoch, cfg, schedule=None):
    """One optimisation step: prepare -> LR for this step -> forward -> loss -> backward -> step -> hook.
    `schedule` = (LRSchedule, iteration index in the epoch, iterations per epoch), or None.
    Returns (loss, outputs, logs); the step is skipped (loss non-finite) per TRAIN.NONFINITE_LOSS."""
    batch = method.prepare_batch(batch, epoch)
    if schedule is not None:
        scheduler, i, n = schedule
        scheduler.step(epoch, i, n, method.lr_scales(batch))
    with amp.autocast():
        outputs = model(batch)
        loss, logs = method.loss(outputs, batch, epoch)
    optimizer.zero_grad(set_to_none=True)
    if not torch.isfinite(loss):
        return loss, outputs, logs
    amp.backward_and_step(loss, optimizer)
    method.after_optimizer_step()
    return loss, outputs, logs


class EpochMeter:
    """Running sums of one epoch (kept in mid-epoch checkpoints so a resumed epoch reports the same)."""

    def __init__(self, state=None):
        self.sums = dict(state or {"loss": 0.0, "correct": 0.0, "n": 0.0, "skipped": 0.0})

    def add(self, key, value):
        self.sums[key] = self.sums.get(key, 0.0) + value

    def state_dict(self):
        return dict(self.sums)

    def result(self, device, seconds):
        keys = sorted(self.sums)
        totals = torch.tensor([self.sums[k] for k in keys], dtype=torch.float64)
        totals = dist_utils.all_reduce_sum(totals.to(device) if device.type == "cuda" else totals).cpu()
        t = dict(zip(keys, totals.tolist()))
        n = max(t["n"], 1)
        out = {"loss": t["loss"] / n, "acc": 100 * t["correct"] / n, "images_per_s": t["n"] / max(seconds, 1e-9),
               "skipped_steps": int(t["skipped"])}
        out.update({k[4:]: v / n for k, v in t.items() if k.startswith("log/")})
        return out


def train_one_epoch(model, method, loader, optimizer, amp, device, epoch, cfg, log, start_iter=0, meter=None,
                    preemption=None, save_partial=None, scheduler=None):
    """One pass over `loader` (from iteration `start_iter` when resuming mid-epoch); returns the epoch's metrics.
    `scheduler` (LRSchedule) is stepped before every optimizer step (per-iteration LR, method lr_scales).

    On a pre-emption signal it calls `save_partial(iteration, meter)` and raises Preempted."""
    model.train()
    meter = meter or EpochMeter()
    start, seen_here = time.time(), 0
    total = start_iter + len(loader)
    bar = tqdm(loader, desc=f"epoch {epoch}/{method.epochs}", leave=False, dynamic_ncols=True,
               initial=start_iter, total=total, disable=not (dist_utils.is_main() and log.interactive))
    for it, batch in enumerate(bar, start_iter + 1):
        batch = to_device(batch, device, cfg.TRAIN.CHANNELS_LAST)
        loss, outputs, logs = train_step(model, method, batch, optimizer, amp, epoch, cfg,
                                         None if scheduler is None else (scheduler, it - 1, total))
        bs = batch["label"].shape[0]
        if not torch.isfinite(loss):
            if cfg.TRAIN.NONFINITE_LOSS != "skip":
                on_disk = last_good_state(os.path.join(run_dir_of(cfg), "models"))
                raise NonFiniteLoss(f"non-finite loss {loss.item()} at epoch {epoch}, iteration {it}; stopped "
                                    f"({on_disk}; TRAIN.NONFINITE_LOSS skip skips such steps)")
            meter.add("skipped", 1)
        else:
            with torch.no_grad():
                pred = method.predict(outputs)["logits"].argmax(1)
            meter.add("n", bs)
            meter.add("loss", loss.item() * bs)
            meter.add("correct", (pred == batch["label"]).sum().item())
            for k, v in logs.items():
                meter.add("log/" + k, float(v) * bs)
        seen_here += bs
        ips = seen_here * dist_utils.world_size() / max(time.time() - start, 1e-9)
        lr = optimizer.param_groups[0]["lr"]
        n = max(meter.sums["n"], 1)
        bar.set_postfix(loss=f"{meter.sums['loss'] / n:.4f}", acc=f"{100 * meter.sums['correct'] / n:.2f}",
                        lr=f"{lr:.2e}", img_s=f"{ips:.0f}")
        if cfg.SHOW_STEP and it % cfg.SHOW_STEP == 0:
            log.info(f"epoch {epoch} iter {it}/{total} loss {meter.sums['loss'] / n:.4f} "
                     f"acc {100 * meter.sums['correct'] / n:.2f} lr {lr:.3e} {ips:.0f} img/s", console=not log.interactive)
        if preemption is not None and preemption.requested() and it < total:
            save_partial(it, meter)
            raise Preempted(preemption.signum, epoch, it)
    bar.close()
    return meter.result(device, time.time() - start)


@dataclasses.dataclass
class Run:
    """What train() builds once and every phase of the run uses."""
    cfg: object
    device: torch.device
    log: RunLogger
    amp: AmpContext
    data: DataSplits
    method: nn.Module
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LRSchedule
    loader: object
    valid_loader: object

    @property
    def dir(self):
        return run_dir_of(self.cfg)


def build(cfg):
    """Device and seeds, data, the method (with NETWORK.PRETRAINED_MODEL loaded), optimizer, schedule, loaders."""
    device = dist_utils.choose_device(cfg)
    dist_utils.init_distributed(device)
    rank, world = dist_utils.rank(), dist_utils.world_size()
    seed_everything(derive_seed(cfg.SEED, "process", rank), cfg.DETERMINISTIC)
    log = RunLogger(enabled=dist_utils.is_main())
    amp = AmpContext(cfg, device, log)
    data = DataSplits(cfg)
    method = build_method(cfg, data.counts)
    init_from_pretrained(cfg, method, log)
    method.to(device)
    if cfg.TRAIN.CHANNELS_LAST:
        method.to(memory_format=torch.channels_last)
    model = wrap_model(cfg, method, device, log)
    optimizer = build_optimizer(cfg, method)
    return Run(cfg, device, log, amp, data, method, model, optimizer, LRSchedule(cfg, optimizer, method.epochs),
               train_loader(cfg, data.train, world, rank, cfg.SEED),
               eval_loader(cfg, data.valid, world, rank) if data.valid else None)


def open_run_dir(run, fresh):
    """Inputs are valid: only now is anything written (a fresh run moves an earlier one in its folder aside)."""
    cfg, data, log = run.cfg, run.data, run.log
    archived = archive_previous_run(cfg) if fresh and dist_utils.is_main() else None
    prepare_run_dir(cfg, write=dist_utils.is_main())
    log.attach_file(run.dir, "train")
    if archived:
        log.info(f"notice: {archived}")
    if dist_utils.is_main():
        data.save_label_map(run.dir)
    log.info(f"run folder {run.dir}; device {run.device}; processes {dist_utils.world_size()}; method {cfg.METHOD}")
    for line in notices(cfg, data.counts):
        log.info(f"notice: {line}")
    for line in run.method.describe():
        log.info(line)
    log.info(f"train {len(data.train)} images, {data.num_classes} classes, max/min per class "
             f"{max(data.counts)}/{min(data.counts)}; valid {len(data.valid) if data.valid else 0}; "
             f"test {len(data.test) if data.test else 0}")


def train(cfg, resume="", auto_resume=False):
    """Run a whole training job from a frozen config; returns the final results dict (rank 0)."""
    run = build(cfg)
    checkpointer = Checkpointer(cfg, run.method, run.optimizer, run.amp, os.path.join(run.dir, "models"), run.log)
    state = checkpointer.resume(resume, auto_resume or cfg.AUTO_RESUME)
    open_run_dir(run, fresh=not (resume or cfg.RESUME_MODEL or auto_resume or cfg.AUTO_RESUME))
    writer = MetricWriter(run.dir, enabled=dist_utils.is_main() and cfg.TRAIN.TENSORBOARD.ENABLE)
    preemption = Preemption()
    try:
        for epoch in range(state.epoch + 1, run.method.epochs + 1):
            t0 = time.time()
            start_iter = checkpointer.start_epoch(epoch, state, run.loader, run.scheduler)
            tr = train_one_epoch(run.model, run.method, run.loader, run.optimizer, run.amp, run.device, epoch, cfg,
                                 run.log, start_iter, EpochMeter(state.meter) if start_iter else None, preemption,
                                 lambda it, meter: checkpointer.save_partial(state, it, meter), run.scheduler)
            tr.update(run.method.on_epoch_end(epoch) or {})
            valid_report = validate_and_log(run, epoch, tr, time.time() - t0, writer)
            state.epoch, state.iteration, state.meter = epoch, 0, None
            checkpointer.save_epoch(state, is_best=state.mark_best(epoch, valid_report))
            dist_utils.barrier()
            if preemption.requested():  # signal during validation/checkpointing: latest.pth is complete
                raise Preempted(preemption.signum, epoch + 1, 0)
    except Preempted as p:
        run.log.info(str(p))
        raise
    finally:
        preemption.uninstall()
        writer.close()
    results = final_evaluation(run, state)
    dist_utils.cleanup()
    return results


def validate_and_log(run, epoch, tr, seconds, writer):
    """The epoch's line (train metrics, and the validation report every VALID_STEP epochs and at the end);
    returns the validation report, or None when there was none."""
    cfg, method = run.cfg, run.method
    lr = run.optimizer.param_groups[0]["lr"]
    writer.scalars(epoch, {"train/" + k: v for k, v in tr.items()}, lr)
    msg = (f"epoch {epoch}/{method.epochs} train loss {tr['loss']:.4f} acc {tr['acc']:.2f} "
           f"lr {lr:.3e} {tr['images_per_s']:.0f} img/s {seconds:.1f}s")
    if tr["skipped_steps"]:
        msg += f" skipped {tr['skipped_steps']} non-finite steps"
    report = None
    if run.valid_loader and (epoch % cfg.VALID_STEP == 0 or epoch == method.epochs):
        report, _, _ = evaluate(run.model, method, run.valid_loader, run.device, run.data.counts, cfg.TEST.SHOT_RULE,
                                run.amp.autocast, channels_last=cfg.TRAIN.CHANNELS_LAST)
        writer.scalars(epoch, {"valid/" + k: report[k] for k in ("top1", "loss", "many", "medium", "few")
                               if report[k] is not None})
        writer.scalars(epoch, {f"valid_{m}/{k}": r[k] for m, r in report["members"].items()
                               for k in ("top1", "many", "medium", "few") if r[k] is not None})
        writer.pair(epoch, tr, report)
        msg += f" | valid top1 {report['top1']:.2f} {format_groups(report)}"
        if report["members"]:
            msg += " | " + " ".join(f"{m} {r['top1']:.2f}" for m, r in report["members"].items())
    run.log.info(msg)
    return report


def final_evaluation(run, state):
    """Evaluate the test split (else valid) with the checkpoint chosen on VALID_JSON, else the last epoch."""
    cfg, method, data, log = run.cfg, run.method, run.data, run.log
    split, dataset = ("test", data.test) if data.test else ("valid", data.valid)
    if dataset is None:
        log.info("no VALID_JSON or TEST_JSON: skipping evaluation")
        return {}
    selection = "last epoch"
    ckpt_epoch = method.epochs
    valid_members = {}  # each member's val top-1 at the selected checkpoint: "best single member, chosen on val"
    best = os.path.join(run.dir, "models", "best_model.pth")
    if data.valid is not None and data.test is not None and os.path.isfile(best):
        load_weights(method, extract_state_dict(load_checkpoint(best)), best)
        selection = f"best top-1 on VALID_JSON (epoch {state.best_epoch})"
        ckpt_epoch = state.best_epoch
        valid_members = state.best_members
    elif data.valid is not None and data.test is None:
        selection = "last epoch (no TEST_JSON: evaluated on VALID_JSON)"
    loader = eval_loader(cfg, dataset, dist_utils.world_size(), dist_utils.rank())
    report, logits, labels = evaluate(run.model, method, loader, run.device, data.counts, cfg.TEST.SHOT_RULE,
                                      run.amp.autocast, flip_tta=cfg.TEST.FLIP_TTA,
                                      logit_tau=cfg.TEST.LOGIT_ADJUST.TAU, channels_last=cfg.TRAIN.CHANNELS_LAST)
    if not dist_utils.is_main():
        return {}
    meta = {"name": cfg.NAME, "method": cfg.METHOD, "split": split, "json": getattr(dataset, "json_path", ""),
            "checkpoint_selection": selection, "checkpoint_epoch": ckpt_epoch, "backbone": cfg.BACKBONE.TYPE,
            "epochs": method.epochs, "shot_rule": cfg.TEST.SHOT_RULE, "flip_tta": cfg.TEST.FLIP_TTA,
            "valid_members_top1": valid_members, "prediction": method.prediction_name}
    results = write_evaluation(run.dir, report, logits, labels, data.counts, meta, cfg.TEST.SHOT_RULE,
                               data.class_names())
    log.info(f"{split} split, checkpoint: {selection}\n" + summary_table(report, method.prediction_name))
    return results
