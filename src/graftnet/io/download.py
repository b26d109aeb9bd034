"""Weights files that other tools download into their own cache folders, found or fetched.

Each zoo keeps its files somewhere of its own (Keras in ``~/.keras/models``, torch hub in
``~/.cache/torch/hub/checkpoints``); graftnet looks there first, downloads with a checksum
when online (``urllib``, a short timeout, written atomically), and otherwise fails with a
message that says which file to put where, from which URL, with which hash::

    >>> path = fetch_verified("https://example.org/w.h5", Path("~/.keras/models/w.h5"),
    ...                       file_hash="6d6bbae143d832006294945121d1f1fc")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from graftnet.errors import CheckpointError, brief_error
from graftnet.io.checkpoint import atomic_output

__all__ = ["DOWNLOAD_TIMEOUT_S", "fetch_verified", "file_digest", "hash_algorithm"]

DOWNLOAD_TIMEOUT_S = 10.0  # seconds to wait for a server to answer; a dead network fails fast


def hash_algorithm(file_hash: str) -> str:
    """``"sha256"`` for a 64-digit hash, ``"md5"`` for a 32-digit one (as ``keras.utils.get_file``)."""
    if len(file_hash) == 64:
        return "sha256"
    if len(file_hash) == 32:
        return "md5"
    raise ValueError(f"a file hash has 32 (md5) or 64 (sha256) hex digits, got {file_hash!r}")


def file_digest(path: Path, algorithm: str) -> str:
    """The hex digest of a file, read in 1 MiB chunks."""
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def _where_to_put(url: str, target: Path, file_hash: str | None) -> str:
    check = f" ({hash_algorithm(file_hash)} {file_hash})" if file_hash else " (no checksum is published for it)"
    return f"download {url}{check} and put it at {target}"


def fetch_verified(url: str, target: Path, *, file_hash: str | None = None, download: bool = True,
                   timeout: float = DOWNLOAD_TIMEOUT_S, what: str = "weights file") -> Path:
    """``target`` if it is there (and matches ``file_hash``); else download ``url`` into it.

    The download goes to a temporary file beside ``target`` and is renamed only once its
    hash matches, so an interrupted or corrupt download never sits at ``target``. Offline
    (or with ``download=False``) the ``CheckpointError`` says which file to put where.
    """
    target = Path(target).expanduser()
    problem = f"the {what} {target.name} is not in {target.parent}"
    if target.is_file():
        if not file_hash:
            return target
        actual = file_digest(target, hash_algorithm(file_hash))
        if actual == file_hash:
            return target
        # as keras.utils.get_file: a file that fails its checksum is downloaded again
        problem = (f"{target} is there but its {hash_algorithm(file_hash)} is {actual}, expected {file_hash} "
                   f"(incomplete, or a different file)")
    if not download:
        raise CheckpointError(f"{problem}; {_where_to_put(url, target, file_hash)}")
    try:
        with atomic_output(target) as tmp:
            with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                shutil.copyfileobj(response, out)
            if file_hash:
                actual = file_digest(tmp, hash_algorithm(file_hash))
                if actual != file_hash:
                    raise CheckpointError(f"{url}: the downloaded file's {hash_algorithm(file_hash)} is {actual}, "
                                          f"expected {file_hash}; nothing was written to {target}")
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        reason = getattr(err, "reason", None) or brief_error(err, with_type=False)
        raise CheckpointError(f"{problem}, and it could not be downloaded ({reason}); "
                              f"{_where_to_put(url, target, file_hash)}") from None
    return target
