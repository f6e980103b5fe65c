"""The toolkit's one switch against the network: datasets and Inception weights are then read from local files only."""
import contextlib
import os
import socket

OFFLINE_ENV = "EBM_TOOLKIT_OFFLINE"  # set (as the tests do) to never try a download


def offline_reason():
    """Why no download is tried (the variable is set), or None."""
    return f"{OFFLINE_ENV} is set" if os.environ.get(OFFLINE_ENV) else None


@contextlib.contextmanager
def network_timeout(seconds=30):
    """A download inside waits at most `seconds` per socket operation: a network that drops packets must not hang
    a run."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)
