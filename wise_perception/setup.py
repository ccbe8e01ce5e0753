"""ament_python entry point: metadata lives in pyproject.toml; this adds the ROS share/ files.

colcon builds this package through setup.py; pip builds it through pyproject.toml, which
runs this same file, so both installs carry the ament index marker, package.xml, the
launch file and the default parameters.
"""

from glob import glob

from setuptools import setup

PACKAGE = "wise_perception"

setup(
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
)
