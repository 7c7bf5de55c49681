"""Error kinds: the CLI turns a `ReidError` into one line and its exit code.

Exit codes (README): 1 a failure caused by input data or the environment (a bad dataset, a
checkpoint mismatch, a failed parity check, a folder in use); 2 a usage error (an option, an
argument or a recipe value that cannot be used).
"""


class ReidError(Exception):
    """A failure caused by the user's input or environment, reported without a traceback."""

    exit_code = 1


class UsageError(ReidError):
    """An option, argument or path that cannot be used as given (exit 2)."""

    exit_code = 2


class RecipeError(UsageError):
    """An invalid recipe or override (usage error)."""


class DeviceError(UsageError):
    """An unknown device name, or a device this machine does not have (usage error)."""


class OutputError(UsageError):
    """An output path reid may not write: a folder where a file is meant, a file where a folder
    is meant, or a non-empty folder that holds files reid did not write."""


class DatasetError(ReidError):
    """A dataset folder, manifest or image that cannot be used."""


class CheckpointError(ReidError):
    """A checkpoint or weights file that cannot be loaded into the model."""


class FeaturesError(ReidError):
    """A features file with missing keys, wrong shapes, wrong dtypes or non-finite values."""


class ParityError(ReidError):
    """An exported model whose outputs differ from the PyTorch model's."""


class TrainingError(ReidError):
    """A training run that cannot continue (non-finite loss, refused resume, ...)."""


class ExportError(ReidError):
    """A model that cannot be exported (an unsupported operator, a missing optional package)."""


class BenchError(ReidError):
    """A bench baseline that cannot be read or compared with the report."""


class GalleryIndexError(ReidError):
    """A gallery index that is missing, corrupt, or does not fit the features given to it."""


class InUseError(ReidError):
    """A run folder, index or output that another process is writing."""


class CalibrationError(ReidError):
    """A calibration that cannot be used: unreadable, made with another model or distance, or
    without the false-match rate asked for."""
