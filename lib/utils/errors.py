"""User-facing errors: one line, naming what to fix, non-zero exit."""
import functools
import sys


class UserError(Exception):
    """A problem with the user's input (config, file, data). Printed as one line."""


def exit_on_user_error(main):
    """Decorator for entry points: a UserError becomes `error: <msg>` on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            text = str(e)
            if "Original Traceback" in text:  # raised inside a DataLoader worker: keep the original message
                last = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
                text = last.split("UserError: ", 1)[-1]
            msg = " ".join(text.split())  # guarantee a single line
            print(f"error: {msg}", file=sys.stderr)
            sys.exit(2)

    return wrapper
