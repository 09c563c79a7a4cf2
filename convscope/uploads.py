"""Where uploads live, which client-named files the app may read, and how long uploads stay.

Gradio keeps every upload (and every image it sends back) in one folder, ``GRADIO_TEMP_DIR``.
ConvScope makes that folder private (0700, a fresh random name per process unless the operator
names one), caps what it may hold, and sweeps it: files older than ``CONVSCOPE_CACHE_SECONDS``
(default 600) are deleted, and so are the partial files of aborted uploads and emptied folders.
A file therefore lives at most ``upload_window() * (1 + 1 / SWEEPS_PER_WINDOW)`` seconds.

No Gradio here: the ASGI guard (convscope.guard) and the tests use these functions too.
"""

from __future__ import annotations

import atexit
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from convscope.preprocess import InputError

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # one image file, in every door (UI, Gradio API, REST)
# one uploaded ONNX model (CONVSCOPE_MAX_MODEL_MB): the only upload allowed to be larger than an image
MAX_MODEL_BYTES = int(float(os.environ.get("CONVSCOPE_MAX_MODEL_MB", "100")) * 2**20)
# the Teach tab and POST /api/v1/teach: many images in one request (a zip, or one part per image)
MAX_TEACH_BYTES = 50 * 2**20
MAX_TEACH_FILES = int(os.environ.get("CONVSCOPE_TEACH_IMAGES", "300"))
SWEEPS_PER_WINDOW = 4  # the sweeper runs this often per window: a file lives at most 1.25 windows
_OWN_DIR_ENV = "CONVSCOPE_OWN_TEMP_DIR"  # set when this process made GRADIO_TEMP_DIR itself


class NotAnUpload(InputError):
    """A client named a file that is not one of its uploads, or one over the cap (the message
    names no path, and is meant for the user like every InputError)."""


def upload_window() -> float:
    """Seconds an upload (or an image sent back) is kept: CONVSCOPE_CACHE_SECONDS, default 600."""
    return float(os.environ.get("CONVSCOPE_CACHE_SECONDS", "600"))


def disk_cap_bytes() -> int:
    """Most bytes the upload folder may hold before new uploads are refused (507):
    CONVSCOPE_UPLOAD_DISK_MB, default 512."""
    return int(float(os.environ.get("CONVSCOPE_UPLOAD_DISK_MB", "512")) * 2**20)


def upload_root() -> Path:
    """The private upload folder, made on first use: ``GRADIO_TEMP_DIR`` if the operator set it
    (created and restricted to 0700), else a fresh ``convscope-uploads-*`` folder under the system
    temp dir, removed when the process exits. Must run before Gradio builds a component: each
    component reads the folder once, when it is made."""
    named = os.environ.get("GRADIO_TEMP_DIR")
    if not named:
        named = tempfile.mkdtemp(prefix="convscope-uploads-")  # 0700 and a random name
        os.environ["GRADIO_TEMP_DIR"] = os.environ[_OWN_DIR_ENV] = named
        atexit.register(shutil.rmtree, named, True)
    root = Path(named)
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    return root.resolve()


def check_upload(path: object, root: Path | None = None, max_bytes: int = MAX_UPLOAD_BYTES) -> Path:
    """The file a client named, if it is a regular file inside the upload folder and within the
    size cap; else NotAnUpload. Looks only at metadata (lstat): a FIFO, a device such as /dev/zero,
    a directory or a symlink is refused without being opened."""
    refused = NotAnUpload("That file was not uploaded to this server (upload it first).")
    if not isinstance(path, str) or not path or "\x00" in path or not os.path.isabs(path):
        raise refused
    root = (root or upload_root()).resolve()
    real = Path(os.path.realpath(path))
    if root not in real.parents:
        raise refused
    try:
        st = os.lstat(real)
    except OSError:
        raise refused from None
    if not stat.S_ISREG(st.st_mode):
        raise refused
    if st.st_size > max_bytes:
        raise NotAnUpload(f"The file is larger than {max_bytes // 2**20} MB.")
    return real


def folder_bytes(root: Path) -> int:
    """Bytes held by the regular files under ``root``."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


class DiskQuota:
    """Whether the upload folder has room for ``n`` more bytes (CONVSCOPE_UPLOAD_DISK_MB). Walking
    the folder costs time in proportion to the files in it (thousands under load), so its size is
    measured at most every ``every`` seconds and the bytes admitted since are added to that."""

    def __init__(self, root: Path, every: float = 10.0) -> None:
        self.root, self.every = root, every
        self._measured, self._at, self._since = 0, -1e9, 0
        self._lock = threading.Lock()

    def admit(self, n: int) -> bool:
        with self._lock:
            now = time.monotonic()
            if now - self._at > self.every:
                self._measured, self._at, self._since = folder_bytes(self.root), now, 0
            if self._measured + self._since + n > disk_cap_bytes():
                return False
            self._since += n
            return True


def sweep(root: Path, age: float, keep: Iterable[str] = (), now: float | None = None) -> int:
    """Delete files under ``root`` last changed more than ``age`` seconds ago (except ``keep``),
    then every folder left empty that is older than that too. Returns how many files went."""
    now = time.time() if now is None else now
    keep = {os.path.realpath(k) for k in keep}
    removed = 0
    for dirpath, dirs, files in os.walk(root, topdown=False):
        for name in files:
            p = os.path.join(dirpath, name)
            try:
                if now - os.lstat(p).st_ctime > age and os.path.realpath(p) not in keep:
                    os.unlink(p)
                    removed += 1
            except OSError:
                continue
        for name in dirs:
            p = os.path.join(dirpath, name)
            try:  # rmdir refuses a folder that is not empty: an upload landing now is safe
                if now - os.lstat(p).st_mtime > age:
                    os.rmdir(p)
            except OSError:
                continue
    return removed


class Sweeper(threading.Thread):
    """Runs :func:`sweep` on the upload folder ``SWEEPS_PER_WINDOW`` times per window."""

    def __init__(self, root: Path, keep: Callable[[], Iterable[str]] = tuple) -> None:
        super().__init__(daemon=True, name="upload-sweeper")
        self.root, self.keep = root, keep
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(max(0.25, upload_window() / SWEEPS_PER_WINDOW)):
            sweep(self.root, upload_window(), self.keep())
