"""The synthetic run of the scale benchmarks (benchmarks/synthetic.py) is a valid run folder
with a recoverable linear head and neighbourhoods that drift but persist across epochs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ttvis.complex import kept_share
from ttvis.knn import exact_knn
from ttvis.run import TrainingRun
from ttvis.subject import LinearHead, load_subject_head

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from synthetic import N_CLASSES, write_run  # noqa: E402


def test_synthetic_run_is_a_valid_classification_run(tmp_path):
    root = write_run(tmp_path / "run", epochs=3, samples=500, dim=48, seed=1)
    run = TrainingRun(root)
    assert run.epochs == [1, 2, 3] and run.shape.dim == 48 and run.n_classes == N_CLASSES
    assert run.train_index.size == 400 and run.test_index.size == 100  # 80/20
    head = load_subject_head(run, 3)
    assert isinstance(head, LinearHead) and head.residual < 1e-3
    reps = [run.train_representations(e) for e in run.epochs]
    knn = [exact_knn(x, 10, device="cpu").indices for x in reps]
    for before, after in zip(knn, knn[1:], strict=False):
        kept = kept_share(before, after).mean()
        assert 0.2 < kept < 0.95, f"share of k-NN kept {kept:.2f}: no drift or no persistence"
    labels = run.labels[run.train_index]
    logits = np.asarray(run.predictions(3))[run.train_index]
    accuracy = (logits.argmax(1) == labels).mean()
    assert 0.5 < accuracy <= 1.0
