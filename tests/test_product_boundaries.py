"""What ships where (issue 11): a robot installs wise_perception, a workstation also
wise_training; neither carries test or benchmark code, which lives in wise_dev."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import wise_perception.core
import wise_training.config

# The installed packages' folders (module files, not the namespace of the repository's
# same-named top-level folders).
PRODUCTS = {
    "wise_perception": Path(wise_perception.core.__file__).parents[1],
    "wise_training": Path(wise_training.config.__file__).parent,
}
assert (PRODUCTS["wise_perception"] / "pipeline.py").is_file()
assert (PRODUCTS["wise_training"] / "train.py").is_file()


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.append(node.module or "")
    return names


@pytest.mark.parametrize("name", sorted(PRODUCTS))
def test_products_never_import_the_development_tools(name):
    root = PRODUCTS[name]
    offenders = [
        f"{path.relative_to(root)}: {module}"
        for path in sorted(root.rglob("*.py"))
        for module in _imports(path)
        if module.split(".")[0] in ("wise_dev", "pytest", "tests", "support")
    ]
    assert not offenders, offenders


@pytest.mark.parametrize("name", sorted(PRODUCTS))
def test_products_carry_no_test_or_benchmark_modules(name):
    root = PRODUCTS[name]
    stray = sorted(
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.parent.name in ("testing", "tests")
        or path.stem.startswith(("bench", "test_", "tiny_models", "teach", "smoke"))
    )
    assert not stray, stray


def test_the_benchmark_console_script_belongs_to_wise_dev():
    from importlib.metadata import entry_points

    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts["wise-bench"].startswith("wise_dev."), scripts["wise-bench"]
    assert scripts["wise-segment"].startswith("wise_perception.")


# ROS lives in one package: a workstation or a training machine uses everything else without
# ROS, and replacing the ROS glue touches one folder.
ROS_PACKAGE = PRODUCTS["wise_perception"] / "node"


def _is_ros(module: str) -> bool:
    top = module.split(".")[0]
    return top in ("rclpy", "rcl_interfaces", "builtin_interfaces", "launch", "launch_ros") or (
        top.endswith("_msgs") or top.endswith("_srvs")
    )


@pytest.mark.parametrize("name", sorted(PRODUCTS))
def test_only_the_node_package_imports_ros(name):
    root = PRODUCTS[name]
    offenders = [
        f"{path.relative_to(root)}: {module}"
        for path in sorted(root.rglob("*.py"))
        if ROS_PACKAGE not in path.parents
        for module in _imports(path)
        if _is_ros(module)
    ]
    assert not offenders, offenders
    # The rule is about real imports: the node package does import ROS.
    assert any(_is_ros(m) for m in _imports(ROS_PACKAGE / "lifecycle.py"))
