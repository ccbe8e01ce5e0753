"""wise_perception/launch/segment.launch.py and config/segment.yaml agree with the node and the install.

`launch`/`launch_ros` are not on any registry these machines use, so the launch description
itself is only loaded where they are installed (a ROS 2 machine); here the file is checked
statically with `ast` (its arguments, the executable it starts, the params file and the remap),
its `parameter_overrides` (what the launch arguments pass to the node) is imported and run,
and a real node process gets a params file plus exactly those overrides, as launch_ros passes
them, to show which value wins.
"""

from __future__ import annotations

import ast
import configparser
import importlib.util
import os
import time
from pathlib import Path
from types import ModuleType

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "wise_perception" / "launch" / "segment.launch.py"
PACKAGE_ROOT = REPO / "wise_perception"
CONFIG = PACKAGE_ROOT / "config" / "segment.yaml"

ARGUMENTS = {"namespace", "image_topic", "params_file", "mode", "device", "use_overlay"}


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and (getattr(n.func, "id", None) == name or getattr(n.func, "attr", None) == name)
    ]


def _constants(tree: ast.Module) -> dict[str, object]:
    out: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = node.value.value
    return out


def _value(node: ast.AST, constants: dict[str, object]) -> object:
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    return ast.literal_eval(node)


def _launch_config_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "LaunchConfiguration":
        return node.args[0].value
    return None


@pytest.fixture(scope="module")
def tree() -> ast.Module:
    return ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))


@pytest.fixture(scope="module")
def launch_module() -> ModuleType:
    """The launch file as a module: it imports the launch packages only when launching."""
    spec = importlib.util.spec_from_file_location("segment_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_description_loads_where_launch_ros_is_installed():
    pytest.importorskip(
        "launch_ros", reason="launch/launch_ros are not installable here (no registry has them)"
    )
    spec = importlib.util.spec_from_file_location("segment_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    names = {a.name for a in description.get_launch_arguments()}
    assert names == ARGUMENTS


def test_declares_exactly_these_arguments_with_defaults(tree):
    declared = {}
    for call in _calls(tree, "DeclareLaunchArgument"):
        name = call.args[0].value
        default = next(k.value for k in call.keywords if k.arg == "default_value")
        declared[name] = default
    assert set(declared) == ARGUMENTS
    assert declared["namespace"].value == "wise"
    assert declared["image_topic"].value == "/camera/image_raw"
    # empty: not given, so the params file's value stands
    assert declared["mode"].value == declared["device"].value == ""
    assert declared["use_overlay"].value == ""
    # the default params file is the installed share/wise_perception/config/segment.yaml
    src = ast.unparse(declared["params_file"])
    assert src == "default_params"
    text = LAUNCH.read_text()
    assert 'get_package_share_directory(PACKAGE), "config", "segment.yaml"' in text


def test_starts_the_installed_node_executable_with_params_and_remap(tree):
    constants = _constants(tree)
    nodes = _calls(tree, "LifecycleNode") + _calls(tree, "Node")
    assert len(nodes) == 1
    kw = {k.arg: k.value for k in nodes[0].keywords}
    assert _value(kw["package"], constants) == "wise_perception"
    executable = _value(kw["executable"], constants)

    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+")
    # the console script pyproject declares for wise_perception.node.lifecycle:main ...
    scripts = tomllib.loads((PACKAGE_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[executable] == "wise_perception.node.lifecycle:main"
    # ... installed where ros2 run / launch_ros look: lib/<package>
    cfg = configparser.ConfigParser()
    cfg.read(PACKAGE_ROOT / "setup.cfg")
    assert cfg["install"]["install_scripts"] == "$base/lib/wise_perception"

    from wise_perception.node.lifecycle import NODE_NAME

    assert _value(kw["name"], constants) == NODE_NAME
    assert _launch_config_name(kw["namespace"]) == "namespace"
    params = kw["parameters"]
    assert isinstance(params, ast.List)
    assert _launch_config_name(params.elts[0]) == "params_file"
    # then only the overrides the user gave (parameter_overrides), after the file so they win
    assert ast.unparse(params.elts[1]) == "*([overrides] if overrides else [])"
    assert len(params.elts) == 2
    remaps = ast.literal_eval(ast.unparse(kw["remappings"]).replace("LaunchConfiguration", ""))
    assert remaps == [("image", "image_topic")]


def test_only_given_arguments_override_the_params_file(launch_module):
    overrides = launch_module.parameter_overrides
    nothing = {"mode": "", "device": "", "use_overlay": ""}
    assert overrides(nothing) == {}
    assert overrides({**nothing, "mode": "wise", "use_overlay": "True"}) == {
        "mode": "wise",
        "use_overlay": True,
    }
    assert overrides({**nothing, "device": " cuda:1 ", "use_overlay": "false"}) == {
        "device": "cuda:1",
        "use_overlay": False,
    }
    with pytest.raises(ValueError, match="use_overlay:='yes'; expected true or false"):
        overrides({**nothing, "use_overlay": "yes"})


@pytest.mark.ros
@pytest.mark.parametrize(
    ("given", "expected"),
    [({}, "mode=wise device=cpu"), ({"mode": "seg_zero"}, "mode=seg_zero device=cpu")],
    ids=["not_given", "given"],
)
def test_a_node_keeps_the_params_file_value_unless_the_argument_is_given(
    launch_module, tmp_path, given, expected
):
    """A real node process: params file first, then the launch overrides, as launch_ros does."""
    pytest.importorskip("rclpy", reason="the node needs rclpy")
    from wise_dev.node_client import node_command, start_node, stop_node

    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    mode: wise\n    device: cpu\n")
    values = {"mode": "", "device": "", "use_overlay": "", **given}
    cmd = node_command(launch_module.parameter_overrides(values), "/wise_launch", stub=True)
    at = cmd.index("--ros-args") + 1
    cmd[at:at] = ["--params-file", str(params)]
    log = tmp_path / "node.log"
    proc = start_node(cmd, 150 + os.getpid() % 50, log)
    try:
        deadline = time.monotonic() + 30
        while "configured:" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
    finally:
        stop_node(proc)
    line = next(x for x in log.read_text().splitlines() if "configured:" in x)
    assert expected in line, line


def test_launch_file_is_installed_by_setup_py():
    # In the package, where ROS users look; the top-level launch/ only points there.
    assert (REPO / "launch").resolve() == LAUNCH.parent.resolve()
    assert not (PACKAGE_ROOT / "launch").is_symlink()
    setup = (PACKAGE_ROOT / "setup.py").read_text()
    assert 'glob("launch/*.launch.py")' in setup and 'glob("config/*.yaml")' in setup


def test_config_sets_exactly_the_declared_parameters():
    pytest.importorskip("rclpy", reason="the node module needs rclpy")
    from wise_perception.node.settings import PARAMETERS

    data = yaml.safe_load(CONFIG.read_text())
    assert list(data) == ["/**"]
    params = data["/**"]["ros__parameters"]
    assert set(params) == {p.name for p in PARAMETERS}
    for p in PARAMETERS:  # same types as the declared defaults (ROS rejects a type change)
        assert type(params[p.name]) is type(p.default), p.name
    assert params["mode"] == "" and params["autostart"] is True
    # launch files and lifecycle managers retry a failed activation: the node stays up
    assert params["exit_on_autostart_failure"] is False
    # auto: reliable from reliable cameras, see the stream measurement (README, "Image QoS")
    assert (params["image_reliability"], params["image_history"], params["image_depth"]) == (
        "auto",
        "keep_last",
        1,
    )
