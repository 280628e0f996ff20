"""Evaluate a trained run: python3 valid.py [--cfg] CONFIG [--checkpoint PATH] [--split test|valid] [KEY VALUE ...]

Flags may come before or after CONFIG (lib/utils/cli.py).

Writes results.json, per_class.csv/json, per_class_accuracy.png, reliability_diagram.png and confusion_matrix.png
into OUTPUT_DIR/NAME/eval/<split>_<checkpoint>[_taunorm<tau>][_la<tau>][_T<T>][_flip]/ (one folder per
prediction-changing option, see lib/evaluation/reports.eval_folder_name; or --out) and prints the many/medium/few
table with the calibration (ECE, NLL). Post-hoc options: TEST.TAU_NORM.USE_TAU_NORM/TAU, TEST.LOGIT_ADJUST.TAU,
TEST.TEMPERATURE (fitted by tools/posthoc_tau.py --temperature), TEST.FLIP_TTA.
"""
import os
import re

import torch

from lib.config import build_config, notices
from lib.data.build import DataSplits, eval_loader
from lib.engine.amp import AmpContext
from lib.engine.checkpoint import load_trained_method
from lib.utils.distributed import choose_device
from lib.engine.run_dir import resolve_checkpoint, run_dir_of
from lib.evaluation.evaluator import evaluate, posthoc_logits
from lib.evaluation.reports import eval_folder_name, summary_table, write_evaluation
from lib.utils.cli import Flag, parse_command_line
from lib.utils.errors import UserError, exit_on_user_error


FLAGS = (
    Flag("--checkpoint", metavar="PATH", help="checkpoint to evaluate (default: TEST.MODEL_FILE in the run's models/)"),
    Flag("--split", metavar="SPLIT", choices=("test", "valid"), help="split to evaluate (default TEST.SPLIT)"),
    Flag("--out", metavar="DIR", help="output folder (default OUTPUT_DIR/NAME/eval/<split>_<checkpoint>)"),
    Flag("--gpus", metavar="IDS", help="BoT's flag: evaluate on GPU IDS[0] (same as DEVICE cuda GPUS [IDS])"),
)


def parse_args(argv=None):
    args = parse_command_line(argv, "python3 valid.py", FLAGS, __doc__)
    if args.gpus is not None:
        if not re.fullmatch(r"\d+(,\d+)*", args.gpus):
            raise UserError(f"--gpus must be comma-separated GPU ids (e.g. 0 or 0,1), got {args.gpus!r}")
        args.opts += ["DEVICE", "cuda", "GPUS", f"[{args.gpus}]"]
    args.checkpoint = args.checkpoint or ""
    args.out = args.out or ""
    return args


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    cfg = build_config(args.cfg, args.opts)
    if cfg.TEST.TEMPERATURE <= 0:
        raise UserError(f"TEST.TEMPERATURE must be > 0, got {cfg.TEST.TEMPERATURE}")
    split = args.split or cfg.TEST.SPLIT
    ckpt_path = resolve_checkpoint(cfg, args.checkpoint, "--checkpoint") if args.checkpoint else \
        resolve_checkpoint(cfg, cfg.TEST.MODEL_FILE, "TEST.MODEL_FILE")
    device = choose_device(cfg)

    data = DataSplits(cfg, need_train=False)
    for line in notices(cfg, data.counts):  # with the training counts: notices can name the run's IF
        print(f"notice: {line}")
    dataset = data.test if split == "test" else data.valid
    if dataset is None:
        key = "DATASET.TEST_JSON" if split == "test" else "DATASET.VALID_JSON"
        raise UserError(f"{key} is empty: nothing to evaluate for split {split!r}")
    method, ckpt = load_trained_method(cfg, data.counts, ckpt_path, device)
    amp = AmpContext(cfg, device)
    loader = eval_loader(cfg, dataset)
    report, logits, labels = evaluate(method, method, loader, device, data.counts, cfg.TEST.SHOT_RULE, amp.autocast,
                                      flip_tta=cfg.TEST.FLIP_TTA, logit_tau=cfg.TEST.LOGIT_ADJUST.TAU,
                                      temperature=cfg.TEST.TEMPERATURE)
    logits = posthoc_logits(logits, data.counts, cfg.TEST.LOGIT_ADJUST.TAU)  # the confusion matrix of the report
    name = os.path.splitext(os.path.basename(ckpt_path))[0]
    out = args.out or os.path.join(run_dir_of(cfg), "eval", eval_folder_name(split, name, cfg))
    meta = {"name": cfg.NAME, "method": cfg.METHOD, "split": split, "json": dataset.json_path,
            "checkpoint": ckpt_path, "checkpoint_epoch": int(ckpt.get("epoch", -1)),
            "backbone": cfg.BACKBONE.TYPE, "shot_rule": cfg.TEST.SHOT_RULE, "flip_tta": cfg.TEST.FLIP_TTA,
            "tau_norm": cfg.TEST.TAU_NORM.TAU if cfg.TEST.TAU_NORM.USE_TAU_NORM else None,
            "logit_adjust_tau": cfg.TEST.LOGIT_ADJUST.TAU, "temperature": cfg.TEST.TEMPERATURE,
            "prediction": method.prediction_name}
    write_evaluation(out, report, logits, labels, data.counts, meta, cfg.TEST.SHOT_RULE, data.class_names())
    print(f"{split} split ({len(dataset)} images), checkpoint {ckpt_path} (epoch {meta['checkpoint_epoch']})")
    print(summary_table(report, method.prediction_name))
    print(f"top-5 {report['top5']:.2f}; outputs in {out}")
    return report


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
