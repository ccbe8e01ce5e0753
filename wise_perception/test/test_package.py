"""`colcon test` checks of the ament package: its files parse and agree with each other.

ROS packages usually run ament_flake8 / ament_pep257 / ament_copyright here; those come with a
ROS installation, so they run where one is present and are skipped (with the reason) where
not. The repository's own suite (`make test`, tests/) covers the code itself.
"""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

PACKAGE = Path(__file__).resolve().parents[1]


def test_package_xml_names_the_package_and_its_build_type():
    root = ET.parse(PACKAGE / "package.xml").getroot()
    assert root.findtext("name") == "wise_perception"
    assert root.find("export/build_type").text == "ament_python"
    assert {"rclpy", "sensor_msgs", "std_msgs"} <= {d.text for d in root.iter("exec_depend")}


def test_launch_file_parses_and_defines_the_entry_point():
    tree = ast.parse((PACKAGE / "launch" / "segment.launch.py").read_text())
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in names


def test_parameters_file_is_for_every_node():
    params = yaml.safe_load((PACKAGE / "config" / "segment.yaml").read_text())
    assert list(params) == ["/**"] and "policy_model" in params["/**"]["ros__parameters"]


@pytest.mark.parametrize("linter", ["ament_flake8", "ament_pep257"])
def test_ament_linters(linter):
    main = pytest.importorskip(f"{linter}.main", reason=f"{linter} comes with a ROS installation")
    assert main.main(argv=[str(PACKAGE / "wise_perception")]) == 0
