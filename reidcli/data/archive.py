"""Dataset archives: extract a release `.zip` inside the output folder, refusing unsafe members."""

import shutil
import zipfile
from pathlib import Path

from reidcli.errors import DatasetError


def extract_zip(archive: Path, dest: Path) -> Path:
    """Extract `archive` into `dest` (replaced if present) and return `dest`.

    Every member is checked before anything is written: an absolute name or one whose path
    leaves `dest` (`../`) makes the whole archive refused.

    Raises:
        DatasetError: the file is not a zip archive or a member would escape `dest`.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            target = dest.resolve()
            unsafe = [
                info.filename
                for info in zf.infolist()
                if Path(info.filename).is_absolute()
                or "\\" in info.filename
                or not (target / info.filename).resolve().is_relative_to(target)
            ]
            if unsafe:
                raise DatasetError(
                    f"refusing {archive}: {len(unsafe)} members would be extracted outside "
                    f"{dest}: {', '.join(unsafe[:5])}"
                )
            tmp = dest.with_name(f".{dest.name}.partial")
            shutil.rmtree(tmp, ignore_errors=True)
            zf.extractall(tmp)
    except zipfile.BadZipFile as err:
        raise DatasetError(f"{archive}: not a valid zip archive ({err})") from None
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest
