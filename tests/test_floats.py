"""Subnormal floats are flushed to zero in every thread of a training process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from conftest import CONF_DIR

# A 1e-39 operand is subnormal in float32; with it flushed, the product over many rows (split
# between the threads) is exactly 0 in every row, whichever thread computed it.
PROBE = """
import torch
{setup}
x = torch.full((4096, 64), 1e-39)
print(int((x @ torch.eye(64)).ne(0).sum()))
"""


def _nonzero_rows(setup: str) -> int:
    code = PROBE.format(setup=textwrap.dedent(setup))
    env = dict(os.environ, OMP_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return int(out.stdout.strip().splitlines()[-1])


def test_subnormals_survive_without_the_setting():
    assert _nonzero_rows("") == 4096 * 64


def test_flush_subnormals_reaches_every_thread():
    assert _nonzero_rows("from ttvis.floats import flush_subnormals; flush_subnormals()") == 0


def test_opening_a_run_for_training_flushes_them(demo_run, tmp_path):
    """``open_run`` (what train.py and ``train(cfg)`` do first) sets it before any torch work."""
    setup = f"""
    from hydra import compose, initialize_config_dir
    from ttvis.preflight import open_run
    with initialize_config_dir(config_dir={str(CONF_DIR)!r}, version_base="1.3"):
        cfg = compose("config", overrides=["content_path={demo_run}", "output_dir={tmp_path}"])
    open_run(cfg)
    """
    assert _nonzero_rows(setup) == 0
