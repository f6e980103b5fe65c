"""User-facing errors: one line on stderr and a non-zero exit, never a traceback."""
import argparse
import sys


class UserError(Exception):
    """A problem with the user's flags, files or environment, reported as one line."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends a flag's default only where its help does not already state one and there is a value to show."""

    def _get_help_string(self, action):
        text, default = action.help or "", action.default
        empty = default is None or default is False or default is argparse.SUPPRESS or \
            (isinstance(default, (str, list, tuple)) and len(default) == 0)
        if empty or not action.option_strings or "default" in text.lower():
            return text
        return text + " (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse that refuses abbreviations, reports errors in one line and ends its help with an example command."""

    def __init__(self, *args, example=None, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        if example:
            kwargs["epilog"] = f"example:\n  {example}"
        super().__init__(*args, **kwargs)

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def run_cli(main, argv=None):
    """Run `main(argv)`, turning UserError and Ctrl-C into a one-line message and exit code."""
    try:
        return main(argv)
    except UserError as e:
        # Raised inside a DataLoader worker, the message arrives wrapped in the worker's traceback text.
        message = str(e).strip().splitlines()[-1].removeprefix(f"{UserError.__module__}.UserError: ")
        sys.stderr.write(f"error: {message}\n")
        sys.exit(2)
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        sys.stderr.write(f"error: {where}{e.strerror or e}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)


def positive_int(text):
    """argparse type: an integer > 0."""
    v = int(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return v


def nonneg_int(text):
    """argparse type: an integer >= 0."""
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return v


def nonneg_float(text):
    """argparse type: a finite float >= 0."""
    v = float(text)
    if not (v >= 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return v


def positive_float(text):
    """argparse type: a finite float > 0."""
    v = float(text)
    if not (v > 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return v


def factor(text):
    """argparse type: a finite float >= 1."""
    v = float(text)
    if not (1 <= v < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 1, got {text}")
    return v


def probability(text):
    """argparse type: a float in [0, 1]."""
    v = float(text)
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return v


def decay_rate(text):
    """argparse type: a float in [0, 1): an average's decay (0: off)."""
    v = float(text)
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text}")
    return v


def int_or_minus_one(text):
    """argparse type: an integer >= 0, or -1 for upstream's 'off / all / automatic'."""
    v = int(text)
    if v < -1:
        raise argparse.ArgumentTypeError(f"expected -1 or an integer >= 0, got {text}")
    return v


def fid_images(text):
    """argparse type: an image count FID and KID are defined on (a covariance needs at least 2)."""
    v = int(text)
    if v < 2:
        raise argparse.ArgumentTypeError(f"expected at least 2 images (FID needs a covariance), got {text}")
    return v


def fid_images_or_zero(text):
    """argparse type: an image count for FID, at least 2, or 0 (whose meaning the flag's help gives)."""
    v = int(text)
    if v != 0 and v < 2:
        raise argparse.ArgumentTypeError(f"expected 0 or at least 2 images (FID needs a covariance), got {text}")
    return v
