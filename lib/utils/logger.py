"""Logging to the console and logs/<kind>_<time>.log (rank 0 only), and TensorBoard scalars."""
import os
import sys
import time


class RunLogger:
    """Console + log file. Lines logged before `attach_file` (start-up, before the run folder may be
    written) are buffered and go into the file once it exists."""

    def __init__(self, enabled=True):
        self.enabled = enabled
        self.file = None
        self.pending = []
        self.interactive = sys.stderr.isatty()

    def attach_file(self, run_dir, kind):
        if not self.enabled:
            return
        path = os.path.join(run_dir, "logs", f"{kind}_{time.strftime('%Y%m%d_%H%M%S')}.log")
        self.file = open(path, "a", buffering=1)
        for line in self.pending:
            self.file.write(line + "\n")
        self.pending = []

    def info(self, msg, console=True):
        if not self.enabled:
            return
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}"
        if console:
            print(msg, flush=True)
        if self.file:
            self.file.write(line + "\n")
        else:
            self.pending.append(line)

    def close(self):
        if self.file:
            self.file.close()


class MetricWriter:
    """TensorBoard via tensorboardX: per-epoch scalars plus BoT's paired scalar/acc and scalar/loss."""

    def __init__(self, run_dir, enabled=True):
        self.writer = None
        if enabled:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(os.path.join(run_dir, "tensorboard"))

    def scalars(self, step, values, lr=None):
        if self.writer is None:
            return
        for k, v in values.items():
            if isinstance(v, (int, float)):
                self.writer.add_scalar(k, v, step)
        if lr is not None:
            self.writer.add_scalar("train/lr", lr, step)

    def pair(self, step, train, valid):
        if self.writer is None:
            return
        self.writer.add_scalars("scalar/acc", {"train_acc": train["acc"], "valid_acc": valid["top1"]}, step)
        self.writer.add_scalars("scalar/loss", {"train_loss": train["loss"], "valid_loss": valid["loss"]}, step)

    def close(self):
        if self.writer is not None:
            self.writer.close()
