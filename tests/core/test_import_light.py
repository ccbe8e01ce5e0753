"""The core imports with no ROS, no GPU and no model library loaded."""

import subprocess
import sys


def test_core_imports_without_heavy_modules():
    code = (
        "import sys, wise_perception.core, wise_perception.result;"
        "heavy = [m for m in ('torch', 'rclpy', 'transformers', 'sentence_transformers', 'cv2') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
