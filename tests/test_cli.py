"""The command as torchrun and srun start it: ``python -m handseg``."""

from __future__ import annotations

import subprocess
import sys

import handseg


def test_python_dash_m_handseg_is_the_handseg_command():
    r = subprocess.run(
        [sys.executable, "-m", "handseg", "--version"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert handseg.__version__ in r.stdout
