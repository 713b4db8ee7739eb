"""The pinned install: constraints.txt, the CI script that uses it, and the version check
that tells a learner when a run folder was made with other library versions."""

import importlib.metadata
import json
import re

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from utils import ROOT, compare, runs, versions

CONSTRAINTS = ROOT / "constraints.txt"
#: The packages whose versions shape the README's numbers.
KEY_PACKAGES = ("keras", "tensorflow", "jax", "jaxlib", "torch", "numpy", "pandas", "scikit-learn")


def pins() -> dict[str, str]:
    """constraints.txt as {canonical name: exact version}."""
    found = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        (spec,) = requirement.specifier  # exactly one specifier per line
        assert spec.operator == "==", line
        name = canonicalize_name(requirement.name)
        assert name not in found, f"{name} pinned twice"
        found[name] = spec.version
    return found


def requirement_names(path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(canonicalize_name(Requirement(line).name))
    return names


def test_constraints_pin_every_requirement_exactly():
    pinned = pins()
    assert len(pinned) > 40  # dependencies too, not only the direct requirements
    wanted = (requirement_names(ROOT / "requirements.txt")
              | requirement_names(ROOT / "requirements-backends.txt"))
    assert wanted - set(pinned) == set()
    for name, version in pinned.items():
        Version(version)  # a real version, not a range or a URL
        assert "+" not in version, f"{name}: a local build label holds for one build only"
    # every pin also satisfies the ranges requirements.txt states
    for path in (ROOT / "requirements.txt", ROOT / "requirements-backends.txt"):
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                requirement = Requirement(line)
                assert requirement.specifier.contains(pinned[canonicalize_name(requirement.name)]), line
    assert CONSTRAINTS.read_text().splitlines()[1].strip() == "#    .ci/lock"  # made by the tool


@pytest.mark.parametrize("package", KEY_PACKAGES)
def test_installed_versions_are_the_pinned_ones(package):
    try:
        installed = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{package} is not installed")
    # 2.13.0+cpu and 2.13.0+cu126 are both builds of the pinned 2.13.0
    assert Version(installed).public == pins()[canonicalize_name(package)], (
        f"{package} {installed} is installed but constraints.txt pins {pins()[canonicalize_name(package)]}: "
        "install with `pip install -r requirements.txt -c constraints.txt` to reproduce the README's numbers")


def test_ci_installs_with_the_constraints_and_the_lock_script_makes_them():
    ci = (ROOT / ".ci" / "run").read_text()
    installs = [line for line in ci.splitlines() if re.search(r"pip install .*-r requirements", line)]
    assert len(installs) >= 2 and all("-c constraints.txt" in line for line in installs), installs
    lock = ROOT / ".ci" / "lock"
    assert lock.stat().st_mode & 0o111, ".ci/lock is not executable"
    text = lock.read_text()
    assert "uv pip compile requirements.txt requirements-backends.txt" in text
    assert "constraints.txt" in text


def test_backend_requirements_say_how_to_get_cpu_and_cuda_builds():
    text = (ROOT / "requirements-backends.txt").read_text()
    assert "https://download.pytorch.org/whl/cpu" in text
    assert "jax[cuda" in text and "tensorflow[and-cuda]" in text and "download.pytorch.org/whl/cu" in text


# --- the version check of utils.compare -----------------------------------------------------------

def test_differences_name_only_what_the_run_used():
    installed = {"python": "3.11.9", "keras": "3.15.1", "tensorflow": "2.21.0", "torch": "2.13.0",
                 "numpy": "2.4.6"}
    same = {"backend": "tensorflow", "versions": {"python": "3.11.7", "keras": "3.15.1",
                                                  "tensorflow": "2.21.0", "torch": "2.12.0",
                                                  "numpy": "2.4.6"}}
    # another patch release of Python, and a torch the TensorFlow run never used: no difference
    assert versions.differences(same, installed) == []
    other = {"backend": "torch", "versions": {"python": "3.12.1", "keras": "3.14.0", "torch": "2.12.0",
                                              "numpy": "2.4.6", "jax": "0.9.0"}}
    assert versions.differences(other, installed) == [
        ("python", "3.12.1", "3.11.9"), ("keras", "3.14.0", "3.15.1"), ("torch", "2.12.0", "2.13.0")]
    assert versions.differences({"versions": {"h5py": "3.0"}}, installed) == [("h5py", "3.0", "none")]
    for damaged in ({}, {"versions": None}, {"versions": ["keras"]}, {"versions": {"keras": 3}}, []):
        assert versions.differences(damaged, installed) == []


def write_run(folder, record):
    folder.mkdir(parents=True)
    (folder / "history.csv").write_text("epoch,loss,accuracy\n1,0.9,0.5\n2,0.7,0.6\n")
    (folder / "run.json").write_text(json.dumps({"chapter": "xor", "model": folder.name, **record}))
    return folder


def test_compare_warns_once_per_run_made_with_other_versions(tmp_path):
    now = runs.package_versions()
    current = write_run(tmp_path / "xor" / "20260101-000000_now", {"backend": "tensorflow", "versions": now})
    older = write_run(tmp_path / "xor" / "20260101-000100_old",
                      {"backend": "tensorflow", "versions": {**now, "keras": "3.0.0", "numpy": "1.26.0"}})
    lines = []
    result = compare.compare([str(current), str(older)], output_dir=tmp_path, warn=lines.append)
    assert len(result.rows) == 2  # both compared; the warning only explains
    mismatch = [line for line in lines if "other versions" in line]
    assert len(mismatch) == 1 and mismatch[0].startswith(f"{older}:")
    assert f"keras 3.0.0 (installed: {now['keras']})" in mismatch[0]
    assert f"numpy 1.26.0 (installed: {now['numpy']})" in mismatch[0]
    assert "\n" not in mismatch[0]


def test_compare_command_prints_the_warning_on_stderr(tmp_path, capsys):
    now = runs.package_versions()
    folder = write_run(tmp_path / "xor" / "20260101-000000_old", {"versions": {**now, "keras": "3.0.0"}})
    assert compare.main([str(folder), "--output-dir", str(tmp_path), "--quiet"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "other versions" in line]
    assert err == [f"warning: {folder}: made with other versions than installed here, so its numbers "
                   f"may differ for that reason alone: keras 3.0.0 (installed: {now['keras']})"]
