"""Keep TensorFlow's native start-up chatter off the learner's screen.

``TF_CPP_MIN_LOG_LEVEL`` (set in ``utils/__init__``) silences most of
TensorFlow's logging, but not the lines it writes before its logger is set up
(more of them when JAX's native library shares the process); C++ writes them
straight to file descriptor 2:

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:... port.cc:153] oneDNN custom operations are on. ...
    I0000 00:00:... cudart_stub.cc:31] Could not find cuda drivers on your machine, ...

:func:`native_info_filtered` captures file descriptor 2 while Keras (and so
TensorFlow and JAX) is imported, then writes back everything except these
informational lines: warnings and errors still show.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)"
                   r"|I\d{4} \d\d:\d\d:\d\d"  # absl INFO lines
                   r"|To enable the following instructions: "
                   # a machine without an NVIDIA driver: harmless, the CPU is used
                   r"|E\d{4} \d\d:\d\d:\d+\.\d+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit)")


@contextlib.contextmanager
def native_info_filtered():
    """Run the block with C-level INFO chatter on stderr dropped."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (some notebooks): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode(errors="replace")
            sys.stderr.write("".join(line for line in text.splitlines(keepends=True)
                                     if not NOISE.match(line)))
            sys.stderr.flush()


def import_keras():
    """``import keras`` with the chatter filtered; returns the module.

    TensorFlow, when installed, is imported here too: Keras loads it sooner or
    later on every backend (``tf.data``, ``keras.utils.set_random_seed``), and
    its native libraries print their INFO lines whenever that happens.
    """
    import importlib.util

    with native_info_filtered():
        import keras

        # Every chapter's images are (height, width, channels); a keras.json
        # saying "channels_first" would make its convolutions read them wrongly.
        # The tutorial sets the format it was written for, for this process only.
        if keras.config.image_data_format() != "channels_last":
            keras.config.set_image_data_format("channels_last")

        if importlib.util.find_spec("tensorflow") is not None:
            import tensorflow

            # Probing the devices now, inside the filter, moves TensorFlow's
            # "failed call to cuInit" (no GPU driver) here, where it is dropped.
            tensorflow.config.list_physical_devices("GPU")
    return keras
