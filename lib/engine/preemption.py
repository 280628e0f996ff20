"""SIGTERM / SIGINT during training: the first signal asks the loop to write a resumable checkpoint
at the next step boundary and stop (exit 128 + signal); a second signal exits at once."""
import os
import signal
import threading

import torch

from ..utils import distributed as dist_utils


class Preempted(Exception):
    def __init__(self, signum, epoch, iteration):
        self.signum = signum
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        where = f"epoch {epoch}, iteration {iteration}" if iteration else f"before epoch {epoch}"
        super().__init__(f"stopped by {name} at {where}; models/latest.pth holds the exact state: "
                         f"rerun the same command with --ar to continue")


class Preemption:
    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum = None
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)

    def _handle(self, signum, frame):
        if self.signum is not None:
            os._exit(128 + signum)  # second signal: no more waiting
        self.signum = signum

    def requested(self):
        """True once a signal arrived on any rank (agreed across ranks under DDP)."""
        if not dist_utils.is_distributed():
            return self.signum is not None
        flag = torch.tensor([float(self.signum or 0)])
        if torch.distributed.get_backend() == "nccl":
            flag = flag.cuda()
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item() and self.signum is None:
            self.signum = int(flag.item())
        return self.signum is not None

    def uninstall(self):
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}
