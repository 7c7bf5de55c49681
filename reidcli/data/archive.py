"""Dataset archives: extract a release `.zip` inside the output folder, refusing unsafe members.

Nothing is written before the whole archive is checked: member paths that leave the output
folder, an uncompressed total larger than the free space there, or a compression ratio that no
image dataset has (a zip bomb) refuse the archive. `zipfile` stops each member at its declared
size (and checks its CRC), so a header that understates a size cannot write more either.
"""

import shutil
import zipfile
from pathlib import Path

from reidcli.errors import DatasetError

# JPEG/PNG images barely compress (ratio ~1); text files in a release reach ~10. A member beyond
# this ratio is a zip bomb, not a dataset.
MAX_COMPRESSION_RATIO = 100
# Members smaller than this are never called bombs, whatever their ratio (a blank mask image).
SMALL_MEMBER = 1 << 20


def extract_zip(archive: Path, dest: Path) -> Path:
    """Extract `archive` into the new folder `dest` (removed first if a killed run left it).

    Raises:
        DatasetError: the file is not a zip archive, a member would escape `dest`, the archive
            would not fit on the disk, or it has the compression ratio of a zip bomb.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            _check_paths(archive, dest, members)
            _check_sizes(archive, dest, members)
            shutil.rmtree(dest, ignore_errors=True)
            try:
                zf.extractall(dest)
            except BaseException:
                shutil.rmtree(dest, ignore_errors=True)
                raise
    except zipfile.BadZipFile as err:
        raise DatasetError(f"{archive}: not a valid zip archive ({err})") from None
    return dest


def _check_paths(archive: Path, dest: Path, members: list[zipfile.ZipInfo]) -> None:
    target = dest.resolve()
    unsafe = [
        info.filename
        for info in members
        if Path(info.filename).is_absolute()
        or "\\" in info.filename
        or not (target / info.filename).resolve().is_relative_to(target)
    ]
    if unsafe:
        raise DatasetError(
            f"refusing {archive}: {len(unsafe)} members would be extracted outside "
            f"{dest}: {', '.join(unsafe[:5])}"
        )


def _check_sizes(archive: Path, dest: Path, members: list[zipfile.ZipInfo]) -> None:
    total = sum(info.file_size for info in members)
    bombs = [
        info.filename
        for info in members
        if info.file_size > SMALL_MEMBER
        and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1)
    ]
    if bombs:
        raise DatasetError(
            f"refusing {archive}: {len(bombs)} members expand more than "
            f"{MAX_COMPRESSION_RATIO}× (no image dataset compresses so well; a zip bomb?): "
            f"{', '.join(bombs[:5])}"
        )
    folder = dest.parent
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if total > free:
        raise DatasetError(
            f"refusing {archive}: it expands to {total / 2**30:.2f} GiB but {folder} has "
            f"{free / 2**30:.2f} GiB free"
        )
