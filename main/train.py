"""Train a method from a YAML config: python main/train.py --cfg FILE [--ar | --resume PATH] [KEY VALUE ...]"""
import argparse
import sys

from lib.config import build_config
from lib.engine.preemption import Preempted
from lib.engine.trainer import train
from lib.utils.errors import exit_on_user_error


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cfg", required=True, help="YAML config file")
    p.add_argument("--ar", "--auto-resume", dest="ar", action="store_true",
                   help="resume from OUTPUT_DIR/NAME/models/latest.pth if it exists")
    p.add_argument("--resume", default="", help="resume from this checkpoint (path or file in models/)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, e.g. TRAIN.MAX_EPOCH 10")
    return p.parse_args(argv)


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
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
