"""Export a trained run's whole prediction as one TorchScript or ONNX model, with its class names and preprocessing.

    python tools/export.py CONFIG|RUN_DIR [--format torchscript|onnx] [--output model.pt] [--checkpoint PATH]
        [--logit-adjust-tau TAU] [--temperature T] [--posthoc DIR] [--examples N] [KEY VALUE ...]

The model maps a normalised image batch (B x C x H x W float32, preprocessed as the sidecar says) to the
combined logits (B x classes): backbone, every member and the method's combination (its predict(), as valid.py
uses it), in eval mode, then the post-hoc options (z - tau log pi) / T when chosen (flags, TEST.LOGIT_ADJUST.TAU,
TEST.TEMPERATURE, or --posthoc DIR from tools/posthoc_tau.py). softmax(logits) gives the probabilities.
It is traced on N (default 8) real images of the run's VALID_JSON (else TEST_JSON, else TRAIN_JSON) and checked
against the eager method (within 1e-5 for TorchScript, 1e-4 for ONNX through onnxruntime, times the largest
|logit| when that is above 1); a larger difference is an error and nothing is written. Export runs on the CPU.

Writes OUTPUT (default OUTPUT_DIR/NAME/export/model.pt or model.onnx) and OUTPUT.json beside it: class names,
input size, colour space, mean / std, the post-hoc settings and the measured difference. A TorchScript file
also carries the JSON inside (lib/deploy/export.load_torchscript reads both). ONNX needs `pip install onnx
onnxruntime` (optional dependencies "export").
"""
import os

import numpy as np
import torch

from lib.data.annotations import read_table
from lib.deploy.export import CombinedPrediction, export_model
from lib.deploy.inputs import ImageList, collate_good_and_bad
from lib.deploy.trained import TrainedRun, config_of, posthoc_opts
from lib.engine.run_dir import run_dir_of
from lib.utils.cli import Flag, parse_command_line
from lib.utils.errors import UserError, exit_on_user_error

SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}
FLAGS = (
    Flag("--format", metavar="FORMAT", choices=tuple(SUFFIX), help="torchscript (default) or onnx"),
    Flag("--output", metavar="PATH", help="model file (default OUTPUT_DIR/NAME/export/model.pt|.onnx)"),
    Flag("--checkpoint", metavar="PATH", help="checkpoint (default: TEST.MODEL_FILE in the run's models/)"),
    Flag("--logit-adjust-tau", dest="tau", metavar="TAU", type=float, help="post-hoc z - tau log pi"),
    Flag("--temperature", metavar="T", type=float, help="temperature scaling z / T (T > 0)"),
    Flag("--posthoc", metavar="DIR", help="tau and T from a tools/posthoc_tau.py output (folder or results.json)"),
    Flag("--examples", metavar="N", type=int, help="real images to trace and check on (default 8)"),
)


def example_batch(run, n):
    """Up to n readable images spread over VALID_JSON (else TEST_JSON, else TRAIN_JSON), as one batch."""
    d = run.cfg.DATASET
    source = d.VALID_JSON or d.TEST_JSON or d.TRAIN_JSON
    table = read_table(source, d.ROOT)
    picks = sorted(set(np.linspace(0, len(table) - 1, min(n * 2, len(table))).astype(int).tolist()))
    items = ImageList([table.path(i) for i in picks], run.transform, run.cfg.COLOR_SPACE, d.EXIF_TRANSPOSE)
    batch = collate_good_and_bad([items[i] for i in range(len(items))][:n * 2])
    if batch["image"] is None:
        raise UserError(f"{source}: none of the example images could be read")
    return batch["image"][:n], source


def sidecar_of(run, output):
    cfg = run.cfg
    pre = run.preprocessing()
    return {"model_file": os.path.basename(output), "name": cfg.NAME, "method": cfg.METHOD,
            "checkpoint": run.checkpoint, "checkpoint_epoch": run.epoch,
            "input": {"name": "image", "shape": ["batch", pre["channels"], *pre["input_size"]], "dtype": "float32"},
            "output": {"name": "logits", "shape": ["batch", len(run.class_names)],
                       "note": "combined logits after the post-hoc options; softmax gives the probabilities"},
            "class_names": run.class_names, "preprocessing": pre, "posthoc": run.posthoc(),
            "torch": torch.__version__}


@exit_on_user_error
def main(argv=None):
    args = parse_command_line(argv, "python tools/export.py", FLAGS, __doc__, configs=("CONFIG|RUN_DIR",))
    fmt = args.format or "torchscript"
    if args.examples is not None and args.examples < 1:
        raise UserError("--examples must be >= 1")
    opts = posthoc_opts(args.posthoc) + args.opts + posthoc_opts(None, args.tau, args.temperature) + ["DEVICE", "cpu"]
    run = TrainedRun(args.cfg, opts, args.checkpoint or "")
    run_dir = config_of(args.cfg)[1] or run_dir_of(run.cfg)
    output = args.output or os.path.join(run_dir, "export", "model" + SUFFIX[fmt])
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    example, source = example_batch(run, args.examples or 8)
    module = CombinedPrediction(run.method, run.counts, run.tau, run.temperature, run.cfg.TEST.FLIP_TTA)
    sidecar = export_model(module, example, fmt, output, sidecar_of(run, output))
    diff = sidecar["max_abs_difference_vs_eager"]
    check = (f"max |exported - eager| = {diff:.2g} (logits up to {sidecar['max_abs_logit']:.3g}) on {len(example)} "
             f"images of {source}" if diff is not None else "not checked: onnxruntime is not installed")
    print(f"{cfg_line(run)}\nexported {fmt} to {output} (+ {os.path.basename(output)}.json: "
          f"{len(run.class_names)} class names, input {sidecar['input']['shape']}, mean/std); {check}")
    return sidecar


def cfg_line(run):
    return (f"{run.cfg.NAME} ({run.cfg.METHOD}), checkpoint {run.checkpoint} (epoch {run.epoch}); "
            f"tau {run.tau:g}, temperature {run.temperature:g}")


if __name__ == "__main__":
    main()
