"""One command-line rule for every entry point that takes a config: main/train.py, valid.py, and the
shell scripts (data_parallel_train.sh, distributed_data_parallel_train.sh, tools/two_stage.sh,
tools/demo.sh), which split their arguments with `python3 -m lib.utils.cli SCRIPT ARGS...`:

    PROG [--cfg] CONFIG [POSITIONALS] [FLAGS] [KEY VALUE ...]   flags may come anywhere: before or
                                                                after CONFIG, between the pairs

- A known flag is recognised wherever it stands (`--flag VALUE` or `--flag=VALUE`); `-h` / `--help`
  prints the usage.
- CONFIG is the value of `--cfg`, else the first bare word; a script's positionals (GPU_IDS) are
  the next bare words. Every other bare word is part of the KEY VALUE overrides
  (`TRAIN.MAX_EPOCH 3`); a VALUE may start with `-` (`SEED -1`).
- What cannot be parsed is one line (a UserError, printed by `exit_on_user_error`) that says what is
  wrong and shows the accepted form: an unknown `--flag`, a flag without its value, an empty or
  missing CONFIG (`--cfg ""` from an unset shell variable never means "the built-in defaults"), a
  word where a KEY is expected, an odd number of override words.

`ArgumentParser` is argparse with the same one-line errors, for the tools that take no config.
"""
import argparse
import contextlib
import os
import re
import sys

from .errors import UserError

KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
_LOOKS_LIKE_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Za-z0-9_]+)*$")  # NAME, TRAIN.MAX_EPOCH


class Flag:
    """A command-line flag: `names` ("--resume", ...), `dest` (attribute name), `metavar` (None: a switch
    without value), `choices`, `help`. `type=float, nargs="+"`: one or more values, taken while the next
    words convert with `type` (`--taus 0.5 1.0 NAME x`); the attribute is then a list."""

    def __init__(self, *names, dest=None, metavar=None, choices=None, help="", type=None, nargs=None, hidden=False):
        self.names = names
        self.dest = dest or names[0].lstrip("-").replace("-", "_")
        self.metavar = metavar
        self.choices = tuple(choices) if choices else None
        self.help = help
        self.type = type
        self.nargs = nargs
        self.hidden = hidden  # accepted, listed by -h, left out of the one-line usage

    @property
    def takes_value(self):
        return self.metavar is not None

    def usage(self):
        if not self.takes_value:
            return f"[{self.names[0]}]"
        more = " ..." if self.nargs == "+" else ""
        return f"[{self.names[0]} {'|'.join(self.choices) if self.choices else self.metavar}{more}]"


CFG_FLAG = Flag("--cfg", dest="cfg", metavar="CONFIG", help="YAML config file (or give CONFIG as the first bare word)")


def usage_line(prog, flags, configs=("CONFIG",), positionals=(), default_config=None, varargs=None):
    words = [prog]
    for c in configs:
        words.append(f"[[--cfg] {c}]" if default_config else f"[--cfg] {c}")
    words += list(positionals) + ([f"{varargs}..."] if varargs else [])
    words += [f.usage() for f in flags if not f.hidden] + ["[KEY VALUE ...]"]
    return " ".join(words)


def _converts(type_, word):
    if type_ is None:
        return not word.startswith("--")
    try:
        type_(word)
        return True
    except ValueError:
        return False


def _is_yaml_path(word):
    return word.lower().endswith((".yaml", ".yml")) or os.path.isfile(word)


def parse_command_line(argv, prog, flags=(), description="", configs=("CONFIG",), positionals=(),
                       default_config=None, varargs=None):
    """Split `argv` into config(s), positionals, flags and KEY VALUE overrides (module docstring).

    `configs`: names of the config arguments (two for tools/two_stage.sh); each is a `--cfg` value
    (in order) or else the next bare word. `positionals`: bare words that follow the configs
    (the launchers' GPU_IDS). `default_config`: the config when none is given (tools/demo.sh); then a
    first bare word is a config only if it is a YAML path.
    Returns an argparse.Namespace with `cfg` (str; `cfgs`, the list, too), one attribute per positional
    (lower case), `opts` (list of str, in pairs) and one attribute per flag (None / False when not
    given). `varargs` (e.g. "INPUTS"): after the positionals, the bare words up to the first that looks like a
    config KEY and is no existing path, as a list attribute (lower case).
    Raises UserError (one line, with the usage) on anything else."""
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = tuple(flags)
    usage = usage_line(prog, flags, configs, positionals, default_config, varargs)

    def fail(problem):
        raise UserError(f"{problem}; usage: {usage} (flags may come before or after the config)")

    def show_help():
        _print_help(usage, (CFG_FLAG,) + flags, description)
        sys.exit(0)

    values, cfgs, bare = _scan(argv, flags, len(configs), fail, show_help)
    _take_configs(cfgs, bare, configs, default_config, fail)
    for name in positionals:
        if not bare:
            fail(f"no {name} given")
        values[name.lower()] = bare.pop(0)
    if varargs:
        words = []
        while bare and not (_LOOKS_LIKE_KEY.match(bare[0]) and not os.path.exists(bare[0])):
            words.append(bare.pop(0))
        values[varargs.lower()] = words
    for k in range(0, len(bare), 2):
        if not KEY_RE.match(bare[k]):
            fail(f"'{bare[k]}' stands where a config KEY is expected")
    if len(bare) % 2:
        fail(f"overrides must be KEY VALUE pairs; '{bare[-1]}' has no value")
    return argparse.Namespace(cfg=cfgs[0], cfgs=cfgs, opts=bare, **values)


def _scan(argv, flags, n_configs, fail, show_help):
    """One pass over `argv`: returns (flag values by dest, the --cfg values, the bare words in order)."""
    by_name = {n: f for f in (CFG_FLAG,) + flags for n in f.names}
    values = {f.dest: (None if f.takes_value else False) for f in flags}
    cfgs, bare = [], []
    i = 0
    while i < len(argv):
        tok = argv[i]
        name, eq, inline = tok.partition("=") if tok.startswith("--") else (tok, "", "")
        if tok in ("-h", "--help"):
            show_help()
        flag = by_name.get(name)
        if flag is None and tok.startswith("--"):
            fail(f"unknown option '{name}'")
        if flag is None:
            bare.append(tok)
            i += 1
        elif not flag.takes_value:
            if eq:
                fail(f"option '{name}' takes no value")
            values[flag.dest] = True
            i += 1
        else:
            value, i = _flag_value(flag, name, argv, i, inline if eq else None, by_name, fail)
            if flag is not CFG_FLAG:
                values[flag.dest] = value
            elif len(cfgs) == n_configs:
                fail(f"--cfg given more than {n_configs} time(s)")
            else:
                cfgs.append(value)
    return values, cfgs, bare


def _flag_value(flag, name, argv, i, inline, by_name, fail):
    """The value of the flag at argv[i] (`inline`: the text after `=`, else None), checked and converted;
    returns (value, index of the next word)."""
    if flag.nargs == "+":
        words = inline.split(",") if inline is not None else []
        i += 1
        while inline is None and i < len(argv) and _converts(flag.type, argv[i]):
            words.append(argv[i])
            i += 1
        if not words or not all(_converts(flag.type, w) for w in words):
            fail(f"option '{name}' needs one or more values ({flag.metavar} ...)")
        return [flag.type(w) if flag.type else w for w in words], i
    if inline is not None:
        value, i = inline, i + 1
    elif i + 1 < len(argv) and argv[i + 1] not in by_name:
        value, i = argv[i + 1], i + 2
    else:
        fail(f"option '{name}' needs a value ({flag.metavar})")
    if not value.strip():
        fail(f"option '{name}' is empty (an unset shell variable?)")
    if flag.choices and value not in flag.choices:
        fail(f"option '{name}' must be one of {', '.join(flag.choices)}, got {value!r}")
    if flag.type is not None and not _converts(flag.type, value):
        fail(f"option '{name}' expects {flag.type.__name__}, got {value!r}")
    return (flag.type(value) if flag.type is not None else value), i


def _take_configs(cfgs, bare, configs, default_config, fail):
    """Complete `cfgs` (the --cfg values) from the leading bare words, else `default_config`."""
    if 0 < len(cfgs) < len(configs):
        fail(f"give all of {', '.join(configs)} with --cfg, or all as bare words")
    while len(cfgs) < len(configs):
        if default_config is not None and not (bare and _is_yaml_path(bare[0])):
            cfgs.append(default_config)
            continue
        missing = configs[len(cfgs)]
        if not bare:
            fail(f"no {missing} given")
        word = bare.pop(0)
        if not word.strip():
            fail(f"{missing} is empty (an unset shell variable?)")
        if _LOOKS_LIKE_KEY.match(word) and not _is_yaml_path(word):
            fail(f"no {missing} given ('{word}' looks like a config KEY, not a YAML file)")
        cfgs.append(word)


def flag_words(args, flags):
    """The command-line words that give `flags` the values parsed into `args` (to forward them)."""
    out = []
    for f in flags:
        v = getattr(args, f.dest)
        if f.takes_value and v is not None:
            out += [f.names[0], v]
        elif not f.takes_value and v:
            out.append(f.names[0])
    return out


def _without_flag_rule(description):
    """The description minus its own "flags may come ..." sentence: the help prints that rule once."""
    lines = [ln for ln in description.strip().splitlines()
             if not ln.strip().lstrip("(").lower().startswith("flags may come")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _print_help(usage, flags, description):
    print(f"usage: {usage}")
    description = _without_flag_rule(description or "")
    if description:
        print(f"\n{description}")
    print("\nFlags may come anywhere: before or after CONFIG, or between the KEY VALUE pairs.")
    for f in flags:
        names = ", ".join(f.names) + (f" {f.metavar}" if f.takes_value else "")
        print(f"  {names:<28} {f.help}")
    print(f"  {'KEY VALUE ...':<28} config overrides, e.g. TRAIN.MAX_EPOCH 10 NAME my_run")


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr that names the problem and shows the usage (exit 2)."""

    def error(self, message):
        usage = " ".join(self.format_usage().split())
        usage = usage[len("usage: "):] if usage.startswith("usage: ") else usage
        print(f"error: {message}; usage: {usage}", file=sys.stderr)
        sys.exit(2)


# ---------------------------------------------------------------- the entry points' flags
TRAIN_FLAGS = (
    Flag("--ar", "--auto-resume", dest="ar", help="resume from OUTPUT_DIR/NAME/models/latest.pth if it exists"),
    Flag("--resume", metavar="PATH", help="resume from this checkpoint (a path, or a file in the run's models/)"),
    # torch.distributed.launch (the originals' launcher) passes --local_rank=N; torchrun sets LOCAL_RANK
    Flag("--local_rank", "--local-rank", dest="local_rank", metavar="N", hidden=True,
         help="accepted from torch.distributed.launch (LOCAL_RANK is read from the environment)"),
)
_RESUME_FLAGS = TRAIN_FLAGS[:1]

# shell script -> how its arguments are read; each forwards FLAGS to main/train.py
SCRIPTS = {
    "data_parallel_train.sh": dict(prog="bash data_parallel_train.sh", flags=TRAIN_FLAGS[:2],
                                   positionals=("GPU_IDS",)),
    "distributed_data_parallel_train.sh": dict(prog="bash distributed_data_parallel_train.sh",
                                               flags=TRAIN_FLAGS[:2], positionals=("NUM_GPUS", "GPU_IDS")),
    "two_stage.sh": dict(prog="bash tools/two_stage.sh", flags=_RESUME_FLAGS, configs=("STAGE1_CFG", "STAGE2_CFG")),
    "demo.sh": dict(prog="bash tools/demo.sh", flags=_RESUME_FLAGS,
                    default_config="configs/fashion_mnist_lt/ce_res32.yaml"),
}


def shell_assignments(script, argv):
    """Bash assignments for `script`'s arguments: CONFIG (STAGE1_CFG, STAGE2_CFG), one variable per
    positional, FLAGS=(...) to forward to main/train.py, OPTS=(...) the KEY VALUE pairs."""
    import shlex

    spec = SCRIPTS[script]
    args = parse_command_line(argv, **spec)
    lines = []
    names = spec.get("configs", ("CONFIG",))
    for name, value in zip(names, args.cfgs):
        lines.append(f"{name}={shlex.quote(value)}")
    for name in spec.get("positionals", ()):
        lines.append(f"{name}={shlex.quote(getattr(args, name.lower()))}")
    lines.append("FLAGS=(" + " ".join(shlex.quote(w) for w in flag_words(args, spec["flags"])) + ")")
    lines.append("OPTS=(" + " ".join(shlex.quote(w) for w in args.opts) + ")")
    return "\n".join(lines)


if __name__ == "__main__":  # python3 -m lib.utils.cli SCRIPT ARGS...  (used by the shell scripts)
    from .errors import exit_on_user_error

    @exit_on_user_error
    def _main():
        if len(sys.argv) < 2 or sys.argv[1] not in SCRIPTS:
            raise UserError(f"usage: python3 -m lib.utils.cli {{{','.join(SCRIPTS)}}} ARGS...")
        try:  # the script evals stdout: -h prints its help on stderr, then `exit 0` for the script
            with contextlib.redirect_stdout(sys.stderr):
                out = shell_assignments(sys.argv[1], sys.argv[2:])
        except SystemExit as e:
            if not e.code:
                print("exit 0")
            raise
        print(out)

    _main()
