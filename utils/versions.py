"""Were these runs made with the library versions installed here?

Every run folder's ``run.json`` records the versions of the packages that shape its
numbers (``"versions"``, written by :func:`utils.runs.package_versions`). A run made
with another Keras, backend or NumPy may differ in its last digits or more, so
``python -m utils.compare`` names each such folder in one warning line. Keras is
never imported: this only reads package metadata.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from utils.runs import package_versions

#: Packages that matter only to runs on that backend (TensorFlow also feeds tf.data
#: pipelines on the other backends, so it is always compared).
BACKEND_ONLY = {"jax": "jax", "jaxlib": "jax", "torch": "torch"}


def _python_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def differences(record: dict, installed: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    """``(package, version in the run, version installed)`` for each package that differs.

    Only packages the run's backend uses are compared; Python by its minor version
    (3.11.7 and 3.11.9 give the same numbers). A package the run recorded that is not
    installed here shows as ``"none"``. A missing or malformed ``versions`` entry
    gives no differences: there is nothing to compare.
    """
    recorded = record.get("versions") if isinstance(record, dict) else None
    if not isinstance(recorded, dict):
        return []
    installed = package_versions() if installed is None else installed
    backend = record.get("backend")
    found = []
    for name, then in recorded.items():
        if not isinstance(then, str) or not isinstance(name, str):
            continue
        if isinstance(backend, str) and BACKEND_ONLY.get(name, backend) != backend:
            continue
        now = installed.get(name, "none")
        if name == "python":
            if _python_minor(then) != _python_minor(now):
                found.append((name, then, now))
        elif then != now:
            found.append((name, then, now))
    return found


def mismatch_warnings(runs: Iterable[tuple[Path | str, dict]],
                      installed: dict[str, str] | None = None) -> list[str]:
    """One line per run folder made with other versions than the installed ones."""
    installed = package_versions() if installed is None else installed
    lines = []
    for path, record in runs:
        found = differences(record, installed)
        if found:
            listed = ", ".join(f"{name} {then} (installed: {now})" for name, then, now in found)
            lines.append(f"{path}: made with other versions than installed here, so its numbers "
                         f"may differ for that reason alone: {listed}")
    return lines
