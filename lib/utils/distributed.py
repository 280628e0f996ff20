"""The few helpers that know about processes: DDP set-up, rank checks, reductions."""
import os
import sys

import torch
import torch.distributed as dist

from .errors import UserError


def is_distributed():
    return dist.is_available() and dist.is_initialized()


def rank():
    return dist.get_rank() if is_distributed() else 0


def world_size():
    return dist.get_world_size() if is_distributed() else 1


def is_main():
    return rank() == 0


def launched_by_torchrun():
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def choose_device(cfg):
    """cpu, or cuda[:local_rank]; GPU ids on a machine without CUDA are an error."""
    want = cfg.DEVICE
    if cfg.CPU_MODE:
        want = "cpu"
    if want == "cuda" or (want == "auto" and cfg.GPUS):
        if not torch.cuda.is_available():
            raise UserError(f"GPUs requested (DEVICE={cfg.DEVICE}, GPUS={list(cfg.GPUS)}) but CUDA is not available; "
                            "use GPU ids 'cpu' or DEVICE cpu")
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        n = torch.cuda.device_count()
        for g in cfg.GPUS:
            if not 0 <= g < n:
                raise UserError(f"GPU id {g} does not exist (this machine has {n} CUDA device(s))")
        if launched_by_torchrun():
            local = int(os.environ.get("LOCAL_RANK", 0))
            torch.cuda.set_device(local)
            return torch.device("cuda", local)
        return torch.device("cuda", cfg.GPUS[0] if cfg.GPUS else 0)
    if want != "cpu":
        raise UserError(f"DEVICE must be auto, cpu or cuda, got {cfg.DEVICE!r}")
    return torch.device("cpu")


def init_distributed(device):
    """Join the torchrun process group (env://): NCCL on CUDA, gloo on CPU. No-op outside torchrun."""
    if not launched_by_torchrun() or is_distributed():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, init_method="env://")


def barrier():
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor):
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_cat(tensor):
    """Concatenate a (variable-length) tensor from every rank along dim 0, in rank order."""
    if not is_distributed():
        return tensor
    n = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    m = int(max(s.item() for s in sizes))
    padded = torch.zeros((m, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    out = [torch.zeros_like(padded) for _ in range(world_size())]
    dist.all_gather(out, padded)
    return torch.cat([o[: int(s.item())] for o, s in zip(out, sizes)])


def all_gather_sizes(n, device):
    """[n of rank 0, n of rank 1, ...] for an int n per rank ([n] outside DDP)."""
    if not is_distributed():
        return [int(n)]
    t = torch.tensor([int(n)], device=device)
    sizes = [torch.zeros_like(t) for _ in range(world_size())]
    dist.all_gather(sizes, t)
    return [int(s.item()) for s in sizes]


def broadcast_(tensor, src=0):
    """In place: every rank gets rank `src`'s tensor (no-op outside DDP)."""
    if is_distributed():
        dist.broadcast(tensor, src=src)
    return tensor


def cleanup():
    """Destroy the process group once every rank is done. The barrier first: a gloo worker thread still freeing
    the last collective's tensors needs the GIL, and destroying the group then deadlocks at exit (seen once in
    the 2-rank test with torch 2.13: ~ProcessGroupGloo joins the thread while holding the GIL)."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def check_gpu_ids(ids, num_processes=None):
    """For the DDP launcher, before torchrun starts: GPU ids this machine cannot give are one UserError naming them."""
    given = ",".join(str(i) for i in ids)
    if not torch.cuda.is_available():
        n = num_processes or len(ids)
        raise UserError(f"GPU_IDS {given} given, but CUDA is not available on this machine; to run {n} process(es) "
                        f"on the CPU (gloo), give cpu as GPU_IDS: bash distributed_data_parallel_train.sh CONFIG {n} cpu")
    n = torch.cuda.device_count()
    missing = [i for i in ids if i >= n]
    if missing:
        raise UserError(f"GPU id {missing[0]} in GPU_IDS {given} does not exist (this machine has {n} CUDA device(s))")


if __name__ == "__main__":  # python3 -m lib.utils.distributed GPU_IDS NUM_GPUS (distributed_data_parallel_train.sh)
    from .errors import exit_on_user_error

    exit_on_user_error(check_gpu_ids)([int(i) for i in sys.argv[1].split(",")], int(sys.argv[2]))
