"""What reid writes, and the rules that keep it from destroying anything else.

- An output **file** (`--out FILE`) is written to a temporary file beside it and renamed into
  place: a reader sees the old file or the new one, and an interrupted write leaves the old one.
  A path that is a folder is refused before any work.
- An output **folder** (a prepared dataset, a run) carries a record, `.reid-output.json`, of the
  verb that made it and of every file it wrote. A verb writes into a folder that is new, empty, or
  recorded as its own kind; a non-empty folder without a record is refused, whatever the flags.
  Replacing a recorded folder's contents (`--overwrite`) removes only the recorded files, and
  refuses when a folder reid replaces wholesale holds files it did not write.
- Temporary files are named `.NAME.<tag>.tmp` beside `NAME`; the next writer of `NAME` (holding
  its lock) removes the ones a killed write left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from reidcli import __version__
from reidcli.errors import OutputError

RECORD = ".reid-output.json"
LOCK = ".reid.lock"
SHOWN = 3


def check_output_file(path: str | Path, what: str = "output") -> Path:
    """`path` as a file reid may write: not a folder, under a folder (or a creatable one).

    Raises:
        OutputError: `path` is a folder, or a parent of it is a file.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; the {what} is a file: give a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{path}: {parent} is a file, not a folder")
            break
    return path


def check_input_file(path: str | Path, what: str, error: type[Exception]) -> Path:
    """`path` as an existing, readable file, else `error` naming what it should be."""
    path = Path(path)
    if not path.exists():
        raise error(f"{path}: no such {what}")
    if path.is_dir():
        raise error(f"{path}: is a folder, not a {what}")
    if not os.access(path, os.R_OK):
        raise error(f"{path}: the {what} is not readable (permission denied)")
    return path


@contextmanager
def atomic_path(path: str | Path, tag: str | None = None) -> Iterator[Path]:
    """A temporary path beside `path` to write; renamed onto `path` when the block succeeds.

    The data is flushed to disk before the rename. An exception (or an interruption) removes
    the temporary file and leaves `path` as it was.
    """
    path = check_output_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{tag or os.getpid()}.tmp")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a text file through `atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _fsync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def remove_stale_temporaries(folder: Path, names: Iterable[str]) -> list[Path]:
    """Remove `.NAME.*.tmp` files that killed writes of `names` left in `folder`.

    Call it only while holding the lock of what those files belong to.
    """
    removed = []
    for name in names:
        for stale in folder.glob(f".{name}.*.tmp"):
            if stale.is_file():
                stale.unlink(missing_ok=True)
                removed.append(stale)
    return removed


class OutputFolder:
    """A folder that a verb owns, with the record of what it wrote there.

    `OutputFolder.open(...)` checks the folder, takes its lock and yields the folder; `own(...)`
    records files before they are written (a killed write leaves them recorded), `replace_tree`
    swaps in a whole sub-folder. With `overwrite`, the previous contents' recorded files stay
    until the verb succeeds and are removed then (or at once with `clear_previous`), so a failed
    verb leaves the previous folder as it was.
    """

    def __init__(self, path: Path, kind: str, record: dict, previous: set[str]):
        self.path = path
        self.kind = kind
        self.record = record
        self.previous = previous  # recorded files of the contents being replaced
        self.replaced: list[str] = []  # previous files removed or written over

    @classmethod
    @contextmanager
    def open(
        cls,
        path: str | Path,
        kind: str,
        *,
        overwrite: bool = False,
        keep: bool = False,
        adopt: tuple[str, ...] = (),
        hint: str = "pass --overwrite to replace it (only the files reid wrote there are removed)",
    ) -> Iterator[OutputFolder]:
        """Take `path` for a verb that writes `kind` folders, holding its lock meanwhile.

        Args:
            path: the folder; created (with its parents) when missing, and removed again when
                the verb fails before writing anything into it.
            kind: what the folder holds ("dataset", "run", ...).
            overwrite: replace a folder of the same kind (its recorded files only).
            keep: continue a folder of the same kind as it is (resuming a run).
            adopt: file patterns an earlier reid wrote in such folders before they carried a
                record: with `keep` or `overwrite`, a folder without a record where they match
                is taken as this kind, with the matching files recorded.
            hint: what to do about a folder of the same kind that may not be continued.

        Raises:
            OutputError: `path` is a file; a non-empty folder without a record (reid did not
                write it); a folder of another kind; a folder of the same kind without
                `overwrite` or `keep`.
            InUseError: another process is writing the folder.
        """
        from reidcli.locking import exclusive

        path = Path(path)
        claim = (kind, overwrite, keep, adopt, hint)
        record = _check_claim(path, *claim)
        created = not path.exists()
        path.mkdir(parents=True, exist_ok=True)
        try:
            with exclusive(path / LOCK, f"{kind} folder {path}"):
                record = _check_claim(path, *claim)  # as it is under the lock
                files = [] if record is None else list(record["files"])
                previous = set() if keep else set(files)
                if record is None or not keep or not (path / RECORD).exists():
                    record = {"kind": kind, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                              "command": _command(), "reid_version": __version__,
                              "files": files}  # fmt: skip
                folder = cls(path, kind, record, previous)
                for stale in path.glob(".*.partial"):
                    shutil.rmtree(stale, ignore_errors=True)
                yield folder
                folder._finish()
        except BaseException:
            if created:
                _remove_if_unused(path)
            raise

    def own(self, *names: str) -> None:
        """Record files (paths relative to the folder) as written by reid, before writing them."""
        files = self.record["files"]
        new = [n for n in names if n not in files]
        for name in names:
            if name in self.previous:
                self.previous.discard(name)
                self.replaced.append(name)
        if new or not (self.path / RECORD).exists():
            files.extend(new)
            _write_record(self.path, self.record)

    def clear_previous(self) -> None:
        """Remove the previous contents' recorded files now (a new run starts clean)."""
        self.replaced += _remove_files(self.path, sorted(self.previous))
        self.record["files"] = [n for n in self.record["files"] if n not in self.previous]
        self.previous = set()
        _write_record(self.path, self.record)

    def check_replaceable(self, sub: str) -> None:
        """Refuse, before any work, a sub-folder `sub` that holds files reid did not write.

        Raises:
            OutputError: naming the foreign files.
        """
        folder = self.path / sub
        if not folder.exists():
            return
        if not folder.is_dir():
            raise OutputError(f"{folder}: is a file; reid writes a folder there")
        owned = set(self.record["files"])
        foreign = sorted(
            p.relative_to(self.path).as_posix()
            for p in folder.rglob("*")
            if not p.is_dir() and p.relative_to(self.path).as_posix() not in owned
        )
        if foreign:
            raise OutputError(
                f"{folder}: holds {len(foreign)} file(s) that reid has no record of writing "
                f"({_quote(foreign)}); reid replaces this folder as a whole and never deletes "
                "files it did not write: move them out, or choose another output folder"
            )

    def replace_tree(self, sub: str, built: Path) -> None:
        """Put the finished folder `built` (a `.NAME.partial` folder inside this one) at `sub`."""
        target = self.path / sub
        self.check_replaceable(sub)
        names = [f"{sub}/{p.relative_to(built).as_posix()}" for p in sorted(built.rglob("*"))
                 if not p.is_dir()]  # fmt: skip
        self.own(*names)
        old = self.path / f".{sub}.old.partial"
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        built.rename(target)
        shutil.rmtree(old, ignore_errors=True)
        new = set(names)
        gone = [n for n in self.previous if n.startswith(f"{sub}/") and n not in new]
        self.replaced += gone
        self.previous -= set(gone)
        self.record["files"] = [
            n for n in self.record["files"] if not n.startswith(f"{sub}/") or n in new
        ]
        _write_record(self.path, self.record)

    def _finish(self) -> None:
        """The verb succeeded: remove what is left of the previous contents."""
        self.replaced += _remove_files(self.path, sorted(self.previous))
        self.record["files"] = [n for n in self.record["files"] if n not in self.previous]
        self.previous = set()
        _write_record(self.path, self.record)


def _check_claim(
    path: Path, kind: str, overwrite: bool, keep: bool, adopt: tuple[str, ...], hint: str
) -> dict | None:
    """The folder's record when the verb may write there; refusals as `OutputFolder.open`."""
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: is a file; the output here is a folder")
    check_output_file(path / RECORD)  # a parent that is a file is refused here
    record = read_record(path)
    if record is None:
        entries = sorted(p.name for p in path.iterdir() if p.name != LOCK) if path.is_dir() else []
        if not entries:
            return None
        earlier = sorted({p.name for pattern in adopt for p in path.glob(pattern) if p.is_file()})
        if not earlier:
            raise OutputError(
                f"{path}: the folder is not empty ({_quote(entries)}) and reid did not write it "
                f"(it has no {RECORD}); reid never deletes or mixes in with files it did not "
                "write: choose a new or empty folder"
            )
        record = {"kind": kind, "created": "before records were kept", "command": "an earlier reid",
                  "reid_version": "", "files": earlier}  # fmt: skip
    if record.get("kind") != kind:
        raise OutputError(
            f"{path}: holds a reid {record.get('kind')} folder, not a {kind} folder; choose "
            "another folder"
        )
    if not (overwrite or keep):
        raise OutputError(
            f"{path}: already holds a {kind} written by `{record.get('command')}` "
            f"({record.get('created')}); {hint}, or choose another folder"
        )
    return record


def read_record(path: Path) -> dict | None:
    """A folder's `.reid-output.json`, None when there is none.

    Raises:
        OutputError: the record exists but cannot be read.
    """
    file = path / RECORD
    if not file.exists():
        return None
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or not isinstance(record.get("files"), list):
            raise ValueError("not a record object")
    except (OSError, ValueError) as err:
        raise OutputError(f"{file}: unreadable record of reid's files ({err})") from None
    return record


def register_output(folder: Path, name: str) -> None:
    """Add a file another verb wrote into a recorded folder (eval.json into a run) to its record."""
    record = read_record(folder) if folder.is_dir() else None
    if record is not None and name not in record["files"]:
        record["files"].append(name)
        _write_record(folder, record)


def _write_record(path: Path, record: dict) -> None:
    write_text_atomic(path / RECORD, json.dumps(record, indent=1) + "\n")


def _remove_files(path: Path, names: list[str]) -> list[str]:
    """Delete the named files (never anything else) and the folders they leave empty."""
    removed = []
    root = path.resolve()
    for name in names:
        target = path / name
        # a record is data: never follow it outside the folder, never remove a folder
        if not target.resolve().is_relative_to(root) or target.is_dir():
            continue
        if target.exists() or target.is_symlink():
            target.unlink()
            removed.append(name)
    for folder in sorted({(path / n).parent for n in names}, key=lambda p: -len(p.parts)):
        while folder != path and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
    return removed


def _remove_if_unused(path: Path) -> None:
    """Remove a folder this verb created when it holds nothing but reid's lock and record."""
    if path.is_dir() and {p.name for p in path.iterdir()} <= {LOCK, RECORD}:
        for name in (RECORD, LOCK):
            (path / name).unlink(missing_ok=True)
        path.rmdir()


def _quote(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown + (f", ... ({len(items)} in all)" if len(items) > SHOWN else "")


def _command() -> str:
    import sys

    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "reidcli"
