"""Keep MediaPipe's native start-up chatter (TFLite delegates, absl warnings) off the user's console."""
from __future__ import annotations

import contextlib
import os
import sys

import numpy as np


@contextlib.contextmanager
def native_stderr_silenced():
    """Point file descriptor 2 at /dev/null for the duration: native code ignores sys.stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def started_quietly(model, input_size: int = 64):
    """Run ``model.process`` once on a blank image with stderr silenced: MediaPipe builds its graph (and logs)
    on the first call, not in the constructor."""
    with native_stderr_silenced():
        model.process(np.zeros((input_size, input_size, 3), np.uint8))
    return model
