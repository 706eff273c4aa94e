"""The integration packages' own virtual environments, built from their lock files.

LiteLLM's proxy and NeMo Guardrails pin versions requirements.lock pins otherwise (rich and
websockets; huggingface-hub), so each runs in a venv of its own, built from
integrations/<name>/requirements.lock with `pip install --no-deps` (the lock is the whole set)
and kept under the test interpreter's prefix (.venv/integration-venvs/<name>-<hash of the lock>):
built once per lock content, reused by every later run.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from filelock import FileLock

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(sys.prefix) / "integration-venvs"


def integration_python(name: str) -> Path:
    """The interpreter of the venv for integrations/`name`, built if this lock has none yet."""
    lock = ROOT / "integrations" / name / "requirements.lock"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:12]
    venv = CACHE / f"{name}-{digest}"
    python = venv / "bin" / "python"
    CACHE.mkdir(parents=True, exist_ok=True)
    with FileLock(str(CACHE / f"{name}.lock")):  # parallel workers build it once
        if not (venv / ".complete").exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=120)
            subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--requirement", str(lock)],
                check=True, timeout=900,
            )
            (venv / ".complete").touch()
    return python
