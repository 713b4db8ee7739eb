"""The one error type a learner can cause, and its named kinds.

A chapter raises these for bad input (a missing file, a misspelt name, a CSV of
the wrong shape). ``utils.cli.run_main`` turns them into one line on stderr and
exit code 2; anything else is a bug and keeps its traceback.
"""


class TutorialError(Exception):
    """Something the person running the tutorial can fix; the message says how."""


class DatasetNotFoundError(TutorialError):
    """No copy of a dataset file could be found locally or downloaded."""


class ChecksumMismatchError(TutorialError):
    """A dataset file exists but is not the file the registry expects."""


class BackendError(TutorialError):
    """The requested Keras backend is not installed or cannot be switched to."""


class ChurnDataError(TutorialError):
    """A churn CSV (or a customer given to ``--predict``) does not fit the expected table."""


class WeightsNotAvailableError(TutorialError):
    """Pretrained weights are neither in the Keras cache nor downloadable, or do not load."""


class ImageReadError(TutorialError):
    """A file given as an image is missing, unreadable or not an image."""


class ShapeMismatchError(TutorialError):
    """A layer's shape or parameter count computed by hand disagrees with Keras."""


class TrainingDiverged(TutorialError):
    """The loss became NaN or infinite: the weights are no use, the run is marked diverged."""


class OutputDirError(TutorialError):
    """The folder runs are written to cannot be created or written."""


class ModelLoadError(TutorialError):
    """A saved model (file, run folder or application weights) cannot be found or loaded."""
