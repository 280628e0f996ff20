"""Predict the classes of new images with a trained run.

    python tools/predict.py CONFIG|RUN_DIR INPUTS... [--checkpoint PATH] [--topk 5] [--members] [--output preds.csv]
        [--batch-size B] [--workers N] [--device cpu|cuda] [--logit-adjust-tau TAU] [--temperature T]
        [--posthoc DIR] [KEY VALUE ...]

RUN_DIR is a training run folder OUTPUT_DIR/NAME (its config.yaml and models/); the checkpoint is
TEST.MODEL_FILE (best_model.pth) there unless --checkpoint says otherwise. INPUTS: image files, folders (all
files below, recursively; hidden ones left out) and .json / .csv lists of paths (lib/deploy/inputs.py).
Images go through the run's test transforms. The prediction is the method's own predict() as in valid.py (a
multi-expert method's aggregate), then the post-hoc options: logit adjustment z - tau log pi
(--logit-adjust-tau, TEST.LOGIT_ADJUST.TAU) and temperature scaling z / T (--temperature, TEST.TEMPERATURE;
changes the probabilities, never the classes); --posthoc DIR takes both from a tools/posthoc_tau.py output.

Writes one CSV row per predicted image (atomically): path, class_1, prob_1, ..., class_k, prob_k and, with
--members, <member>_class, <member>_prob (each expert's / head's top-1). A corrupt, truncated, empty or
non-image file is a warning line and is left out; the run goes on. Exit status 0 if any image was predicted,
else 1 (and 2 for a bad command line or config).
"""
import sys

import torch

from lib.deploy.inputs import list_inputs
from lib.deploy.predict import predict_paths
from lib.deploy.trained import TrainedRun, posthoc_opts
from lib.utils.atomic import write_text
from lib.utils.cli import Flag, parse_command_line
from lib.utils.errors import UserError, exit_on_user_error

FLAGS = (
    Flag("--checkpoint", metavar="PATH", help="checkpoint (default: TEST.MODEL_FILE in the run's models/)"),
    Flag("--topk", metavar="K", type=int, help="classes per image (default 5)"),
    Flag("--members", help="also each member's (expert's / head's) top-1"),
    Flag("--output", metavar="CSV", help="output file (default preds.csv)"),
    Flag("--batch-size", dest="batch_size", metavar="B", type=int, help="images per batch (default TEST.BATCH_SIZE)"),
    Flag("--workers", metavar="N", type=int, help="DataLoader workers (default TEST.NUM_WORKERS)"),
    Flag("--device", metavar="DEVICE", choices=("cpu", "cuda"), help="default: cuda when present, else cpu"),
    Flag("--logit-adjust-tau", dest="tau", metavar="TAU", type=float, help="post-hoc z - tau log pi"),
    Flag("--temperature", metavar="T", type=float, help="temperature scaling z / T (T > 0)"),
    Flag("--posthoc", metavar="DIR", help="tau and T from a tools/posthoc_tau.py output (folder or results.json)"),
)


def parse_args(argv=None):
    args = parse_command_line(argv, "python tools/predict.py", FLAGS, __doc__, configs=("CONFIG|RUN_DIR",),
                              varargs="INPUTS")
    if not args.inputs:
        raise UserError("no INPUTS given: name image files, folders or .json/.csv lists after CONFIG|RUN_DIR")
    for name in ("topk", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1")
    if args.workers is not None and args.workers < 0:
        raise UserError("--workers must be >= 0")
    return args


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    opts = posthoc_opts(args.posthoc) + args.opts + posthoc_opts(None, args.tau, args.temperature)
    if args.device:
        opts += ["DEVICE", args.device]
    run = TrainedRun(args.cfg, opts, args.checkpoint or "")
    paths = list_inputs(args.inputs, warn=lambda line: print(f"warning: {line}"))
    if not paths:
        raise UserError(f"no files found in {' '.join(args.inputs)}")
    cfg = run.cfg
    batch = args.batch_size or cfg.TEST.BATCH_SIZE
    workers = cfg.TEST.NUM_WORKERS if args.workers is None else args.workers
    print(f"{cfg.NAME} ({cfg.METHOD}), checkpoint {run.checkpoint} (epoch {run.epoch}), device {run.device}; "
          f"tau {run.tau:g}, temperature {run.temperature:g}; {len(paths)} files")
    text, done, bad, seconds = predict_paths(run, paths, batch, workers, args.topk or 5, args.members)
    output = args.output or "preds.csv"
    write_text(output, text)
    rate = done / seconds if seconds > 0 else float("inf")
    print(f"predicted {done} images in {seconds:.2f}s ({rate:.1f} images/s, batch {batch}, {workers} workers, "
          f"{run.device}); skipped {len(bad)} unreadable files; wrote {output}")
    if not done:
        print("error: no image could be predicted", file=sys.stderr)
        sys.exit(1)
    return done, bad


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
