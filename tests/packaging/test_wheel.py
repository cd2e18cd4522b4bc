"""The distributions: the provider's wheel (pyproject.toml) and the emulator's (include/pyproject.toml).

Each is built here from a clean copy of its sources (``pip wheel --no-deps --no-build-isolation``, with the
setuptools of the lock), so a stale ``build/`` folder in the work tree can never leak into what is checked.
The wheel is what ``pip install .`` puts into a stock Airflow 3: it must hold the provider and the pipeline
and never the emulator, declare every third-party module they import, and register the provider.
"""

from __future__ import annotations

import ast
import email
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[2]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")


def _build(source: Path, files: list[str], tmp: Path) -> Path:
    """Copy ``files`` of ``source`` into ``tmp/src`` and build one wheel from there; returns its path."""
    src, out = tmp / "src", tmp / "dist"
    src.mkdir()
    for name in files:
        if (source / name).is_dir():
            shutil.copytree(source / name, src / name, ignore=IGNORE)
        else:
            shutil.copy2(source / name, src / name)
    cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-cache-dir"]
    done = subprocess.run([*cmd, "--wheel-dir", str(out), str(src)], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = out.glob("*.whl")
    return wheel


def _metadata(wheel: Path) -> tuple[list[str], email.message.Message, str]:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(archive.read(f"{dist_info}/METADATA"))
        ep = f"{dist_info}/entry_points.txt"
        entry_points = archive.read(ep).decode() if ep in names else ""
    return names, meta, entry_points


@pytest.fixture(scope="module")
def provider_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(REPO_ROOT, ["pyproject.toml", "README.md", "plugins"], tmp_path_factory.mktemp("provider"))


def _runtime_requirements(meta: email.message.Message) -> dict[str, Requirement]:
    """Requires-Dist without an ``extra ==`` marker: what ``pip install`` of the wheel brings in."""
    reqs = [Requirement(line) for line in meta.get_all("Requires-Dist") or []]
    return {canonicalize_name(r.name): r for r in reqs if not (r.marker and "extra" in str(r.marker))}


def test_the_wheel_holds_the_provider_and_the_pipeline_and_not_the_emulator(provider_wheel: Path) -> None:
    names, _, _ = _metadata(provider_wheel)
    packages = {name.split("/")[0] for name in names if name.endswith(".py")}
    assert packages == {"dashscope_provider", "talking_heads"}, packages
    for module in ("hooks/dashscope.py", "operators/dashscope.py", "sensors/dashscope.py", "triggers/dashscope.py"):
        assert f"dashscope_provider/{module}" in names
    assert not [n for n in names if "emulator" in n or n.startswith(("tests/", "include/", "dags/"))]
    # every module of plugins/ is in it (a new subpackage without __init__.py would silently be left out)
    sources = {p.relative_to(REPO_ROOT / "plugins").as_posix() for p in (REPO_ROOT / "plugins").rglob("*.py")}
    assert sources <= set(names), sources - set(names)


def test_the_wheel_registers_the_provider_and_its_connection_type(provider_wheel: Path) -> None:
    _, meta, entry_points = _metadata(provider_wheel)
    assert meta["Name"] == "airflow-dashscope-talking-heads"
    assert "[apache_airflow_provider]" in entry_points
    assert "provider_info = dashscope_provider:get_provider_info" in entry_points
    from dashscope_provider import get_provider_info

    info = get_provider_info()
    assert info["package-name"] == meta["Name"]
    assert [c["connection-type"] for c in info["connection-types"]] == ["dashscope"]


def test_the_wheel_requires_the_runtime_dependencies(provider_wheel: Path) -> None:
    _, meta, _ = _metadata(provider_wheel)
    runtime = _runtime_requirements(meta)
    for name in (
        "apache-airflow",
        "apache-airflow-providers-http",
        "apache-airflow-providers-common-compat",
        "apache-airflow-providers-amazon",
        "apache-airflow-providers-alibaba",
        "aiohttp",
        "requests",
        "tenacity",
        "pandas",
        "pyarrow",
        "fsspec",
        "s3fs",
        "ossfs",
        "pydantic",
        "pillow",
        "mutagen",
        "matplotlib",
    ):
        assert name in runtime, name
    assert runtime["apache-airflow"].specifier.contains("3.3.2") and not runtime["apache-airflow"].specifier.contains(
        "2.11.0"
    )
    # test tools and the emulator's own dependencies are extras, never runtime
    for name in ("pytest", "moto", "ruff", "numpy", "imageio-ffmpeg", "dashscope", "dashscope-emulator"):
        assert name not in runtime, name
    extras = set(meta.get_all("Provides-Extra") or [])
    assert {"tests", "emulator", "benchmarks", "celery"} <= extras


def _imports(folder: Path) -> set[str]:
    """Absolute imports of every module under ``folder``, as dotted names (function-level ones too)."""
    found: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
    return found


def test_every_third_party_module_the_code_imports_is_declared(provider_wheel: Path) -> None:
    """Whatever plugins/ (and dags/, which ship beside the wheel) import comes from a declared dependency."""
    _, meta, _ = _metadata(provider_wheel)
    declared = set(_runtime_requirements(meta))
    dists = packages_distributions()
    missing = []
    for module in sorted(_imports(REPO_ROOT / "plugins") | _imports(REPO_ROOT / "dags")):
        top = module.split(".")[0]
        if top in sys.stdlib_module_names or top in {"dashscope_provider", "talking_heads"}:
            continue
        if module.startswith("airflow.providers."):
            # airflow.providers.common.compat.connection -> apache-airflow-providers-common-compat
            parts = module.split(".")[2:]
            wanted = {"apache-airflow-providers-" + "-".join(parts[:n]) for n in (1, 2)}
            if not wanted & declared:
                missing.append(module)
        elif top == "airflow":
            if "apache-airflow" not in declared:
                missing.append(module)
        elif not {canonicalize_name(d) for d in dists.get(top, [top])} & declared:
            missing.append(module)
    assert not missing, f"imported but not declared in pyproject.toml's dependencies: {missing}"


#: Every lock: requirements.txt (the default, the newest Airflow line: what ./test.sh runs with and the image's
#: constraints) and one per supported Airflow line (constraints/airflow-X.Y.txt, what scripts/matrix.sh runs).
LOCKS = ["requirements.txt", *sorted(p.relative_to(REPO_ROOT).as_posix() for p in REPO_ROOT.glob("constraints/*.txt"))]


def _pins(lock: str) -> dict[str, str]:
    pins = {}
    for line in (REPO_ROOT / lock).read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, version = line.split("==")
            pins[canonicalize_name(name.split("[")[0])] = version.strip()
    return pins


def test_there_is_a_lock_per_supported_airflow_line() -> None:
    """constraints/airflow-X.Y.txt pins Airflow X.Y, and requirements.txt is the newest line's lock."""
    lines = [lock for lock in LOCKS if lock.startswith("constraints/")]
    assert lines == ["constraints/airflow-3.1.txt", "constraints/airflow-3.2.txt", "constraints/airflow-3.3.txt"]
    for lock in lines:
        line = lock.removeprefix("constraints/airflow-").removesuffix(".txt")
        assert _pins(lock)["apache-airflow"].startswith(f"{line}."), lock
    assert _pins("requirements.txt") == _pins(lines[-1])


@pytest.mark.parametrize("lock", LOCKS)
def test_every_dependency_is_pinned_by_the_lock(provider_wheel: Path, lock: str, tmp_path: Path) -> None:
    """Each lock satisfies every range the wheel declares (runtime, and the tests and celery extras its
    installation uses) and the emulator's: `pip install -c <lock> -e . -e include` keeps to the lock."""
    _, meta, _ = _metadata(provider_wheel)
    emulator = _build(REPO_ROOT / "include", ["pyproject.toml", "dashscope_emulator"], tmp_path)
    _, emulator_meta, _ = _metadata(emulator)
    pins = _pins(lock)
    requirements = [Requirement(line) for line in meta.get_all("Requires-Dist") or []]
    requirements += [Requirement(line) for line in emulator_meta.get_all("Requires-Dist") or []]
    checked = 0
    for req in requirements:
        if req.marker and not any(req.marker.evaluate({"extra": extra}) for extra in ("", "tests", "celery")):
            continue  # another extra (benchmarks), or another platform
        name = canonicalize_name(req.name)
        assert name in pins, f"{name} is not in {lock}"
        assert req.specifier.contains(pins[name], prereleases=True), f"{lock}: {name}=={pins[name]} breaks {req}"
        checked += 1
    assert checked >= len(_runtime_requirements(meta))


def test_the_emulator_is_its_own_distribution(tmp_path: Path) -> None:
    include = REPO_ROOT / "include"
    project = tomllib.loads((include / "pyproject.toml").read_text())["project"]
    assert project["name"] == "dashscope-emulator"
    wheel = _build(include, ["pyproject.toml", "dashscope_emulator"], tmp_path)
    names, meta, _ = _metadata(wheel)
    assert {name.split("/")[0] for name in names if name.endswith(".py")} == {"dashscope_emulator"}
    requires = {canonicalize_name(Requirement(r).name) for r in meta.get_all("Requires-Dist") or []}
    assert {"numpy", "pillow", "imageio-ffmpeg", "mutagen"} <= requires
    assert not {n for n in requires if n.startswith("apache-airflow")}
    main = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert main["tool"]["setuptools"]["packages"]["find"]["where"] == ["plugins"]
