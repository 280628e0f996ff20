"""Post-hoc logit adjustment of a trained run, tau chosen on the validation split (CADEL stage two).

    python tools/posthoc_tau.py [--cfg] CONFIG [--checkpoint PATH] [--taus 0.9 1.0 ...] [--temperature] [--out DIR]
        [KEY VALUE ...]
    (flags may come before or after CONFIG)

Works on a trained run of any method (it needs only logits): loads CONFIG's checkpoint (default
TEST.MODEL_FILE in OUTPUT_DIR/NAME/models/, as valid.py), computes the logits of the main prediction and
of every member (experts / heads; CADEL: last head, mean of heads, each head) once on VALID_JSON and
once on TEST_JSON, then for each prediction separately picks tau in the grid maximising the validation
top-1 of z - tau log pi (pi = training class frequencies; ties: first in grid order). Test labels are
never used for the choice. Grid: --taus, else the method's own (`posthoc_taus`; CADEL: CADEL.POSTHOC_TAUS),
else 0.0, 0.1, ..., 2.0. With --temperature, a temperature T per prediction is then fitted on VALID_JSON (the
T > 0 minimising the NLL of (z - tau log pi) / T; it changes probabilities, never the arg max) and the report
uses it; tools/predict.py and tools/export.py read tau and T from results.json (--posthoc DIR).

Writes into OUTPUT_DIR/NAME/posthoc_tau/ (or --out): tau_table.csv / tau_table.md (validation top-1 per tau
and prediction, the choice marked) and the test result with the chosen taus: results.json (main and
every member, each with its tau, plus the same predictions without adjustment), per_class.csv/.json,
per_class_accuracy.png and confusion_matrix.png (main prediction). Without TEST_JSON (iNaturalist 2018)
the report split is VALID_JSON, i.e. the selection split, and the tool says so.
"""
import os
import sys

import torch

from lib.config import build_config, notices
from lib.data.build import DataSplits, eval_loader
from lib.engine.amp import AmpContext
from lib.engine.checkpoint import load_trained_method
from lib.engine.run_dir import resolve_checkpoint, run_dir_of
from lib.evaluation import tau_search
from lib.evaluation.calibration import T_RANGE, nll
from lib.evaluation.evaluator import posthoc_logits, predict_split
from lib.evaluation.reports import calibration_line, write_evaluation
from lib.utils.atomic import write_text
from lib.utils.distributed import choose_device
from lib.utils.cli import Flag, parse_command_line
from lib.utils.errors import UserError, exit_on_user_error

SAME_SPLIT_WARNING = ("WARNING: no TEST_JSON: tau is chosen AND reported on VALID_JSON (the same split); the "
                      "reported accuracy is optimistic (iNaturalist 2018 has no public test labels)")


FLAGS = (
    Flag("--checkpoint", metavar="PATH", help="checkpoint path (default: TEST.MODEL_FILE in the run's models/)"),
    Flag("--taus", metavar="TAU", type=float, nargs="+", help="tau grid (default: the method's, else 0..2)"),
    Flag("--out", metavar="DIR", help="output folder (default OUTPUT_DIR/NAME/posthoc_tau)"),
    Flag("--temperature", help="also fit a temperature per prediction on VALID_JSON (after tau)"),
)


def parse_args(argv=None):
    """The project's command-line rule (lib/utils/cli.py): flags before or after CONFIG."""
    args = parse_command_line(argv, "python3 tools/posthoc_tau.py", FLAGS, __doc__)
    args.cfg_flag, args.checkpoint, args.out = None, args.checkpoint or "", args.out or ""
    return args


def logits_of(cfg, method, dataset, device, amp):
    """{"main": logits, member: logits, ...} and labels of a whole split."""
    loader = eval_loader(cfg, dataset)
    logits, labels, members, _ = predict_split(method, method, loader, device, amp.autocast,
                                               flip_tta=cfg.TEST.FLIP_TTA, channels_last=cfg.TRAIN.CHANNELS_LAST)
    return tau_search.as_tensor_dict(logits, members), labels


def result_table(report, chosen):
    def f(v):
        return "  n/a" if v is None else f"{v:5.2f}"

    rows = [("main", report)] + list(report["members"].items())
    lines = ["| prediction | tau (val) | top-1 | many | medium | few | top-1 without tau | ECE | NLL |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows:
        lines.append(f"| {name} | {chosen[name]:g} | {f(r['top1'])} | {f(r['many'])} | {f(r['medium'])} | "
                     f"{f(r['few'])} | {f(report['unadjusted'][name]['top1'])} | {f(r['ece'])} | {f(r['nll'])} |")
    return "\n".join(lines) + "\n" + calibration_line(report)


def temperature_lines(val_preds, val_labels, counts, chosen, temps):
    rows = []
    for n, t in temps.items():
        before = nll(posthoc_logits(val_preds[n].float(), counts, chosen[n]), val_labels)
        after = nll(posthoc_logits(val_preds[n].float(), counts, chosen[n], t), val_labels)
        bound = " (the search's bound)" if t in T_RANGE else ""
        rows.append(f"{n} T={t:.4g}{bound} (val NLL {before:.4f} -> {after:.4f})")
    return "temperature fitted on VALID_JSON: " + ", ".join(rows)


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    cfg_file = args.cfg or args.cfg_flag
    if not cfg_file:
        raise UserError("give the run's config: python tools/posthoc_tau.py CONFIG [--taus ...] [KEY VALUE ...]")
    cfg = build_config(cfg_file, args.opts)
    for line in notices(cfg):
        print(f"notice: {line}")
    if cfg.TEST.LOGIT_ADJUST.TAU:
        print(f"notice: TEST.LOGIT_ADJUST.TAU = {cfg.TEST.LOGIT_ADJUST.TAU} is ignored here: tau is searched")
    ckpt_path = args.checkpoint or resolve_checkpoint(cfg, cfg.TEST.MODEL_FILE, "TEST.MODEL_FILE")
    data = DataSplits(cfg, need_train=False)
    if data.valid is None:
        raise UserError("DATASET.VALID_JSON is empty: tau must be chosen on a validation split (never on the test split)")
    same_split = data.test is None
    device = choose_device(cfg)
    method, ckpt = load_trained_method(cfg, data.counts, ckpt_path, device)
    taus = args.taus or method.posthoc_taus or tau_search.default_grid()
    taus = [float(t) for t in taus]
    amp = AmpContext(cfg, device)

    val_preds, val_labels = logits_of(cfg, method, data.valid, device, amp)
    if same_split:
        print(SAME_SPLIT_WARNING, file=sys.stderr)
        print(SAME_SPLIT_WARNING)
        rep_preds, rep_labels, rep_set = val_preds, val_labels, data.valid
    else:
        rep_preds, rep_labels = logits_of(cfg, method, data.test, device, amp)
        rep_set = data.test
    chosen, table, report = tau_search.posthoc_logit_adjustment(
        val_preds, val_labels, rep_preds, rep_labels, data.counts, taus, cfg.TEST.SHOT_RULE)
    temps = None
    if args.temperature:
        temps = tau_search.choose_temperatures(val_preds, val_labels, data.counts, chosen)
        report = tau_search.report_with_taus(rep_preds, rep_labels, data.counts, chosen, cfg.TEST.SHOT_RULE,
                                             temps_by_name=temps)

    out = args.out or os.path.join(run_dir_of(cfg), "posthoc_tau")
    os.makedirs(out, exist_ok=True)
    note = " on VALID_JSON" + (" (also the report split)" if same_split else "")
    write_text(os.path.join(out, "tau_table.csv"), tau_search.tau_table_csv(taus, table, chosen))
    md = tau_search.tau_table_markdown(taus, table, chosen, note)
    write_text(os.path.join(out, "tau_table.md"), md)
    split = "valid" if same_split else "test"
    meta = {"name": cfg.NAME, "method": cfg.METHOD, "split": split, "json": rep_set.json_path,
            "selection_split": "valid", "selection_json": data.valid.json_path,
            "selection_is_report_split": same_split, "checkpoint": ckpt_path,
            "checkpoint_epoch": int(ckpt.get("epoch", -1)), "backbone": cfg.BACKBONE.TYPE,
            "shot_rule": cfg.TEST.SHOT_RULE, "flip_tta": cfg.TEST.FLIP_TTA, "tau_grid": taus,
            "tau": chosen, "val_top1_at_tau": {n: table[n][taus.index(t)] for n, t in chosen.items()},
            "temperature": temps,
            "note": "logits (z - tau log pi) / T; tau (then T) per prediction chosen on the validation split only"}
    adjusted_main = posthoc_logits(rep_preds["main"].float(), data.counts, chosen["main"], (temps or {}).get("main", 1))
    write_evaluation(out, report, adjusted_main, rep_labels, data.counts, meta, cfg.TEST.SHOT_RULE,
                     data.class_names())
    print(f"checkpoint {ckpt_path} (epoch {meta['checkpoint_epoch']}); tau grid {taus}")
    print(md)
    if temps:
        print(temperature_lines(val_preds, val_labels, data.counts, chosen, temps))
    print(f"{split} split ({len(rep_set)} images), each prediction with its tau chosen on VALID_JSON:")
    print(result_table(report, chosen))
    if same_split:
        print(SAME_SPLIT_WARNING)
    print(f"outputs in {out}")
    return chosen, table, report


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
