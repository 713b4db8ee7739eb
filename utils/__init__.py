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

# An OpenMP thread that runs out of work spins on its core for a while before it
# sleeps. On the torch backend one process holds two OpenMP pools (PyTorch's and
# scikit-learn's) next to TensorFlow's tf.data threads; on a 2-core machine their
# spinning takes the cores the next training step needs, and an epoch can take many
# times longer than the one before it (benchmarks/rnn_torch_epochs.py measures it).
# Idle threads that sleep cost a few microseconds per wake-up instead. OpenMP reads
# the variable when its library loads, so this must run before torch or sklearn do.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: The repository root, whatever the current directory is.
ROOT = Path(__file__).resolve().parent.parent
