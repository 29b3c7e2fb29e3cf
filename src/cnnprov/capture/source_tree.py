"""The git working tree a process runs from: its commit, whether it differs, and the difference.

The difference is what ``git diff HEAD`` prints (staged and unstaged changes to tracked files,
as a patch ``git apply`` takes in the repository's top folder). Untracked files are not in it;
they are counted. The patch is hashed whole, however large, and kept as text when it is at most
:data:`MAX_DIFF_BYTES` of UTF-8 that an XML document can hold (PROV-XML exports it).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: The largest patch kept as text in the record (64 KiB); a larger one is recorded by its hash and size.
MAX_DIFF_BYTES = 64 * 1024

_GIT_TIMEOUT_S = 10
#: Characters XML 1.0 cannot hold (other control characters): a patch with them is not kept as text.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass(frozen=True)
class SourceTree:
    """A git working tree as a run found it."""

    commit: str
    top_level: str
    dirty: bool
    diff_sha256: str
    diff_bytes: int
    diff_text: str | None = None
    untracked_files: int | None = None


def _git(directory: Path, *arguments: str) -> subprocess.CompletedProcess | None:
    try:
        result = subprocess.run(
            ["git", *arguments], cwd=directory, capture_output=True, text=True, timeout=_GIT_TIMEOUT_S
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result if result.returncode == 0 else None


def source_tree(directory: str | os.PathLike = ".") -> SourceTree | None:
    """The working tree ``directory`` is in, or ``None`` outside one (or without ``git``, or before a first commit)."""
    place = Path(directory)
    head = _git(place, "rev-parse", "--show-toplevel", "HEAD")
    if head is None:
        return None
    lines = head.stdout.splitlines()
    if len(lines) != 2:
        return None
    top_level, commit = lines
    diff = _diff(place)
    if diff is None:
        return None
    sha256, size, text = diff
    untracked = _git(place, "ls-files", "--others", "--exclude-standard", "-z")
    return SourceTree(
        commit=commit,
        top_level=top_level,
        dirty=size > 0,
        diff_sha256=sha256,
        diff_bytes=size,
        diff_text=text,
        untracked_files=untracked.stdout.count("\0") if untracked is not None else None,
    )


def _diff(directory: Path) -> tuple[str, int, str | None] | None:
    """The SHA-256 and size of ``git diff HEAD``'s output, read in chunks; its text when small enough."""
    digest = hashlib.sha256()
    kept = bytearray()
    size = 0
    try:
        with subprocess.Popen(
            # a patch `git apply` takes whatever the user's git settings: standard prefixes, binary changes
            # in full, no textconv filters
            ["git", "-c", "diff.noprefix=false", "-c", "diff.mnemonicPrefix=false", "diff", "--no-color",
             "--no-ext-diff", "--binary", "--no-textconv", "--src-prefix=a/", "--dst-prefix=b/", "HEAD"],
            cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        ) as process:
            assert process.stdout is not None
            for chunk in iter(lambda: process.stdout.read(1 << 16), b""):  # type: ignore[union-attr]
                digest.update(chunk)
                size += len(chunk)
                if len(kept) <= MAX_DIFF_BYTES:
                    kept += chunk[: MAX_DIFF_BYTES + 1 - len(kept)]
            if process.wait(timeout=_GIT_TIMEOUT_S) != 0:
                return None
    except (OSError, subprocess.SubprocessError):
        return None
    return digest.hexdigest(), size, _as_text(bytes(kept), size)


def _as_text(data: bytes, size: int) -> str | None:
    if size == 0 or size > MAX_DIFF_BYTES:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if _NOT_XML.search(text) else text
