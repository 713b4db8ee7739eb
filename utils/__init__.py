"""Pieces every chapter shares: flags, datasets, run folders, callbacks, plots.

Nothing here imports Keras at module level, so a chapter can pick its backend
(``--backend``) after importing ``utils`` and before importing ``keras``.
"""

import os
from pathlib import Path

# TensorFlow's C++ start-up chatter (CUDA probes, CPU features) buries the
# lesson's own output; keep its errors, drop its info and warnings unless the
# learner set the variable themselves. Must happen before TensorFlow loads.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: The repository root, whatever the current directory is.
ROOT = Path(__file__).resolve().parent.parent
