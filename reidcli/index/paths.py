"""Image paths as a gallery stores and matches them.

A features file's paths are stored as written, relative ones normalised (`./a/../b.jpg` is
`b.jpg`) and taken relative to the index's root: the folder the index was built from. A path
given later (to remove it, or in a file added from another folder) is matched in every spelling
that names the same file: as written, absolute, and relative to the root.
"""

from __future__ import annotations

import os


def absolute(path: str, base: str) -> str:
    """`path` made absolute against `base` and normalised (no `.`, `..` or doubled slashes)."""
    return os.path.normpath(os.path.join(base, path))


def stored_path(path: str, root: str, cwd: str) -> str:
    """How a path read in folder `cwd` is stored in an index rooted at `root`.

    Absolute paths stay absolute; relative ones are normalised and, when read in another
    folder than the root, re-based onto it (outside it they become absolute).
    """
    text = str(path)
    if os.path.isabs(text):
        return os.path.normpath(text)
    if os.path.normpath(cwd) == os.path.normpath(root):
        return os.path.normpath(text)
    full = absolute(text, cwd)
    relative = os.path.relpath(full, root)
    return full if relative.startswith(os.pardir) else relative


def spellings(path: str, root: str, cwd: str) -> tuple[str, ...]:
    """Every way an index rooted at `root` may have stored the file `path` names from `cwd`."""
    text = str(path)
    full = absolute(text, cwd)
    relative = os.path.relpath(full, root)
    forms = {os.path.normpath(text), full}
    if not relative.startswith(os.pardir):
        forms.add(relative)
    return tuple(sorted(forms))
