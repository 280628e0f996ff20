"""One module for the whole prediction of a trained run, saved as TorchScript or ONNX with a JSON sidecar.

The module maps a normalised image batch (B x C x H x W, float32) to the combined logits (B x classes): the
method's own forward + predict() in eval mode through evaluator.predict_batch (as valid.py), then
(z - tau log pi) / T. It is traced (torch.jit.trace) on a batch of real images and checked against the eager
method on that batch and on a single image; a difference above CHECK_TOLERANCE x max(1, largest |logit|) is
an error (float32 rounding grows with the logits' size).
The sidecar `<output>.json` (also stored inside a TorchScript file as extra file `ltr_export.json`) holds the
class names, the preprocessing (input size, colour space, mean / std) and the post-hoc settings.
"""
import contextlib
import io
import json
import warnings

import torch
from torch import nn

from ..evaluation.evaluator import posthoc_logits, predict_batch
from ..utils.atomic import atomic_open, write_json
from ..utils.errors import UserError

CHECK_TOLERANCE = {"torchscript": 1e-5, "onnx": 1e-4}
EXTRA_FILE = "ltr_export.json"


class CombinedPrediction(nn.Module):
    """image batch -> the method's combined logits, post-hoc adjusted; `method` must be in eval mode."""

    def __init__(self, method, counts, tau=0.0, temperature=1.0, flip_tta=False):
        super().__init__()
        self.method = method
        self.counts, self.tau, self.temperature, self.flip_tta = list(counts), tau, temperature, flip_tta

    def forward(self, image):
        pred = predict_batch(self.method, self.method, {"image": image}, self.flip_tta)
        return posthoc_logits(pred["logits"].float(), self.counts, self.tau, self.temperature)


@contextlib.contextmanager
def _quiet():
    """Tracing warns about Python values it records as constants (class counts, shapes): expected here."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        yield


def trace(module, example):
    with _quiet():
        return torch.jit.trace(module, (example,), check_trace=False)


def onnx_bytes(module, example):
    """The module as ONNX (TorchScript-based exporter, dynamic batch axis); needs the `onnx` package."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise UserError("--format onnx needs the onnx package (pip install onnx onnxruntime); "
                        "--format torchscript needs nothing more") from None
    buf = io.BytesIO()
    with _quiet():
        torch.onnx.export(module, (example,), buf, dynamo=False, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    return buf.getvalue()


def onnx_runner(data):
    """A function image -> logits running ONNX bytes with onnxruntime, or None when it is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"image": x.cpu().numpy()})[0])


@torch.no_grad()
def max_difference(run_exported, module, batches):
    """(largest |exported - eager|, largest |eager|) over `batches` (several sizes: the batch size is not baked in).
    TorchScript runs without the graph executor's profiling passes here: they cost seconds per new input shape."""
    diff = scale = 0.0
    with torch.jit.optimized_execution(False):
        for x in batches:
            eager = module(x).float().cpu()
            diff = max(diff, (run_exported(x).float().cpu() - eager).abs().max().item())
            scale = max(scale, eager.abs().max().item())
    return diff, scale


def save_torchscript(path, traced, sidecar):
    extra = {EXTRA_FILE: json.dumps(sidecar)}
    with atomic_open(path, "wb") as f:
        torch.jit.save(traced, f, _extra_files=extra)


def save_onnx(path, data):
    with atomic_open(path, "wb") as f:
        f.write(data)


def export_model(module, example, fmt, path, sidecar):
    """Trace / convert `module`, check it against the eager module on `example` and on its first image, then
    write `path` and `path`.json atomically. Returns the sidecar written (with the measured difference)."""
    module.eval()
    batches = [example, example[:1]]
    if fmt == "torchscript":
        exported = trace(module, example)
        runner = exported
    else:
        data = onnx_bytes(module, example)
        runner = onnx_runner(data)
    diff, scale = max_difference(runner, module, batches) if runner is not None else (None, None)
    if diff is not None and diff > CHECK_TOLERANCE[fmt] * max(1.0, scale):
        raise UserError(f"the exported {fmt} model differs from the eager method by {diff:.3g} (logits up to "
                        f"{scale:.3g}; tolerance {CHECK_TOLERANCE[fmt]:g} x max(1, that)) on the example images; "
                        f"nothing written")
    sidecar = dict(sidecar, format=fmt, max_abs_difference_vs_eager=diff, max_abs_logit=scale, verified_with=(
        None if runner is None else "torch.jit" if fmt == "torchscript" else "onnxruntime"))
    if fmt == "torchscript":
        save_torchscript(path, exported, sidecar)
    else:
        save_onnx(path, data)
    write_json(path + ".json", sidecar, indent=1)
    return sidecar


def load_torchscript(path, device="cpu"):
    """(module, sidecar) of a TorchScript file written by export_model."""
    extra = {EXTRA_FILE: ""}
    module = torch.jit.load(path, map_location=device, _extra_files=extra)
    return module, json.loads(extra[EXTRA_FILE])
