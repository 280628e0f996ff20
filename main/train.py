"""Train a method from a YAML config.

    python3 main/train.py [--cfg] CONFIG [--ar | --resume PATH] [KEY VALUE ...]

Flags may come before or after CONFIG (lib/utils/cli.py); KEY VALUE pairs override the YAML.
"""
import os
import sys

from lib.config import build_config
from lib.engine.preemption import Preempted
from lib.engine.trainer import train
from lib.utils.cli import TRAIN_FLAGS, parse_command_line
from lib.utils.errors import exit_on_user_error


def parse_args(argv=None):
    return parse_command_line(argv, "python3 main/train.py", TRAIN_FLAGS, __doc__)


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", args.local_rank)
    cfg = build_config(args.cfg, args.opts)
    resume = ""
    if args.resume:
        from lib.engine.run_dir import resolve_checkpoint

        resume = resolve_checkpoint(cfg, args.resume, "--resume")
    try:
        train(cfg, resume=resume, auto_resume=args.ar)
    except Preempted as p:
        print(f"interrupted: {p}", file=sys.stderr)
        sys.exit(p.exit_code)


if __name__ == "__main__":
    main()
