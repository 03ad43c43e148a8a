"""Walking a folder someone else filled: only regular files that really live inside it.

Dataset sources, the API's incoming folders, LoRA and model folders are filled by people and
tools lanskap doesn't control. A link can point anywhere on the machine (``leak.txt ->
~/.ssh/id_rsa``), a FIFO blocks whoever reads it, and a name may not be valid UTF-8. The
standard library's ``rglob``/``is_file`` follow links and treat all of these as files, so this
module decides once, for every scan, what may be read and says why the rest was passed over.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Skipped:
    """An entry a scan did not read, with the reason a person can act on."""

    rel: str  # relative to the scanned folder, with forward slashes; odd bytes shown escaped
    reason: str


def inside(path: Path, root: Path) -> bool:
    """Whether ``path``, links resolved, lies in ``root`` (links resolved too)."""
    try:
        return Path(path).resolve().is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError):  # a link loop
        return False


def shown(rel: str) -> str:
    """A relative name as text: bytes that are not UTF-8 are escaped rather than crashing a report."""
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISDIR, "a folder")):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"


def check_entry(path: Path, root: Path, rel: str) -> str | None:
    """Why ``path`` may not be read as a file of ``root``, or None when it may."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "the name is not valid UTF-8; rename the file"
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            if not inside(path, root):
                return "a link that leads out of the folder"
            st = os.stat(path)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if not stat.S_ISREG(st.st_mode):
        return f"{_kind(st.st_mode)}, not a file"
    return None


def walk(root: Path, *, recursive: bool = True) -> tuple[list[Path], list[Skipped]]:
    """The readable files under ``root`` in sorted order, and what was passed over and why.

    Links to files inside ``root`` count; links out of it, links to folders (never followed),
    FIFOs, sockets, devices, hidden entries and names that are not UTF-8 are listed as skipped.
    """
    root = Path(root)
    files: list[tuple[str, Path]] = []
    skipped: list[Skipped] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        base = here.relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        for name in sorted(dirnames):
            hidden, link = name.startswith("."), (here / name).is_symlink()
            if hidden or link:
                why = "hidden" if hidden else "a link to a folder (links to folders are not followed)"
                skipped.append(Skipped(shown(prefix + name), why))
            if hidden or link or not recursive:
                dirnames.remove(name)
        for name in filenames:
            rel = prefix + name
            if name.startswith("."):
                skipped.append(Skipped(shown(rel), "hidden"))
                continue
            reason = check_entry(here / name, root, rel)
            if reason is None:
                files.append((rel, here / name))
            else:
                skipped.append(Skipped(shown(rel), reason))
    files.sort(key=lambda f: f[0])
    return [p for _, p in files], sorted(skipped, key=lambda s: s.rel)


def escapes(folder: Path, root: Path) -> list[Skipped]:
    """What under ``folder`` would make a loader read outside ``root``, or block on read.

    A model folder is read whole by a library that follows every link, so one link out of it
    (``unet/diffusion_pytorch_model.safetensors -> ~/.ssh/id_rsa``) or one FIFO rules the folder out.
    """
    folder = Path(folder)
    problems: list[Skipped] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        base = here.relative_to(folder).as_posix()
        prefix = "" if base == "." else base + "/"
        for name in sorted(dirnames + filenames):
            path, rel = here / name, prefix + name
            if path.is_symlink() and not inside(path, root):
                problems.append(Skipped(shown(rel), "a link that leads out of the folder"))
            elif name in filenames:
                reason = check_entry(path, root, rel)
                if reason is not None and not reason.startswith("the name"):
                    problems.append(Skipped(shown(rel), reason))
    return problems
