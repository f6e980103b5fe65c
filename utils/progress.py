"""Progress bars that stay readable when the output is a log file."""
import sys

from tqdm import tqdm

LOG_INTERVAL_S = 30.0  # seconds between bar updates when the bar's stream is a file or a pipe, not a terminal


def progress(*args, **kwargs):
    """tqdm; when its stream is not a terminal (a log file, a scheduler), it updates at most every LOG_INTERVAL_S
    seconds instead of ten times a second, so a log holds a few bar lines, not thousands."""
    stream = kwargs.get("file") or sys.stderr
    if not (hasattr(stream, "isatty") and stream.isatty()):
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        kwargs.setdefault("maxinterval", max(LOG_INTERVAL_S, kwargs["mininterval"]))
    return tqdm(*args, **kwargs)
