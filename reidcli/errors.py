"""Error kinds: the CLI turns a `ReidError` into a message and exit 1, a `RecipeError` into 2."""


class ReidError(Exception):
    """A failure caused by the user's input or environment, reported without a traceback."""

    exit_code = 1


class RecipeError(ReidError):
    """An invalid recipe or override (usage error)."""

    exit_code = 2


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


class DeviceError(ReidError):
    """An unknown device name, or a device this machine does not have (usage error)."""

    exit_code = 2


class ExportError(ReidError):
    """A model that cannot be exported (an unsupported operator, a missing optional package)."""


class BenchError(ReidError):
    """A bench baseline that cannot be read or compared (usage error)."""

    exit_code = 2


class GalleryIndexError(ReidError):
    """A gallery index that is missing, corrupt, or does not fit the features given to it."""
