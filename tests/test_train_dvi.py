"""End to end: ``python train.py`` on a copy of the tiny demo run, single and multi-process."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import RESOLUTION, check_export, copy_run, run_train
from matplotlib import image as mpl_image

from ttvis.export import class_palette, pixel_of
from ttvis.run import TrainingRun

pytestmark = pytest.mark.slow

# Enough visualizer steps (~13 batches x 5 epochs per subject epoch) for decision regions that
# match the samples on them, with a small network to stay fast.
QUALITY = [
    "trainer.max_epochs=5",
    "method.s_n_epochs=2",
    "method.batch_size=100",
    "model.hidden_dims=[64,64]",
    f"export.resolution={RESOLUTION}",
    "logger=tensorboard",
]


@pytest.fixture(scope="module")
def trained(demo_run, tmp_path_factory) -> tuple[Path, Path]:
    """``(content_path, hydra_dir)`` of one train.py run with the TensorBoard logger on."""
    tmp = tmp_path_factory.mktemp("train")
    content = copy_run(demo_run, tmp / "run")
    run_train([f"content_path={content}", *QUALITY], tmp)
    return content, tmp / "hydra"


def test_export_is_complete_and_valid(trained):
    content, hydra_dir = trained
    check_export(content, [1, 2, 3])
    assert (hydra_dir / ".hydra" / "config.yaml").exists()


def _class_of_pixels(pixels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Nearest palette colour of each pixel once its fade towards white is undone."""
    p = pixels.astype(np.float64)
    errors = []
    for colour in palette.astype(np.float64):
        d = colour - 1.0
        s = np.clip(((p - 1.0) @ d) / (d @ d), 0.0, 1.0)
        errors.append(np.linalg.norm(1.0 - s[:, None] * (1.0 - colour) - p, axis=1))
    return np.argmin(np.stack(errors, 1), 1)


def _matches(run: TrainingRun, vis: Path, flip: bool) -> tuple[int, int, int]:
    """(matching, coloured, total) training samples over all epochs."""
    palette = class_palette(run.n_classes)
    hits = coloured = total = 0
    for epoch in run.epochs:
        proj = np.load(vis / "projection" / f"{epoch}.npy")[run.train_points]
        scale = np.load(vis / "scale" / f"{epoch}.npy")
        image = mpl_image.imread(vis / "bgimg" / f"{epoch}.png")[..., :3]
        if flip:
            image = image[::-1]  # what an upside-down (row 0 = y_min) reading would see
        rc = pixel_of(proj, scale, image.shape[0])
        pixels = image[rc[:, 0], rc[:, 1]]
        predicted = np.asarray(run.predictions(epoch))[run.train_index].argmax(1)
        keep = pixels.min(1) < 0.85  # skip nearly white (boundary) pixels
        hits += int((_class_of_pixels(pixels[keep], palette) == predicted[keep]).sum())
        coloured += int(keep.sum())
        total += len(predicted)
    return hits, coloured, total


def test_background_under_each_sample_has_its_predicted_class(trained):
    content, _ = trained
    run = TrainingRun(content)
    vis = content / "visualize" / "DVI"
    hits, coloured, total = _matches(run, vis, flip=False)
    assert coloured >= 0.3 * total, f"only {coloured}/{total} samples lie on coloured pixels"
    assert hits >= 0.7 * coloured, f"{hits}/{coloured} samples lie on their predicted class"
    # Control: the same check on a vertically flipped image does much worse.
    flipped, _, _ = _matches(run, vis, flip=True)
    assert flipped < hits - 0.2 * coloured


def test_tensorboard_events_per_subject_epoch(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, hydra_dir = trained
    events = list((hydra_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert events, f"no event files under {hydra_dir}"
    tags = set()
    for event_file in events:
        acc = EventAccumulator(str(event_file))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    for epoch in (1, 2, 3):
        mine = {t for t in tags if t.startswith(f"DVI/epoch_{epoch}/")}
        assert any("umap" in t for t in mine), sorted(tags)
        assert any("recon" in t for t in mine), sorted(tags)
        assert any("total" in t for t in mine), sorted(tags)
    # The warm fits' temporal link: each sample held at its previous position by how many
    # neighbours it kept (the weight temporal loss is off by default).
    assert any(t.startswith("DVI/epoch_2/anchor") for t in tags), "no anchor loss logged"
    assert not any(t.startswith("DVI/epoch_1/anchor") for t in tags)


def test_selected_non_contiguous_epochs(demo_run, tmp_path):
    content = copy_run(demo_run, tmp_path / "run")
    run_train([f"content_path={content}", "epochs=[1,3]"], tmp_path)
    check_export(content, [1, 3])


def _mean_neighbour_preserving(content: Path, epochs: list[int], k: int = 10) -> float:
    """Mean over ``epochs`` of the training samples' neighbour preserving of an export."""
    from ttvis.metrics import neighbour_preserving

    run = TrainingRun(content)
    values = []
    for epoch in epochs:
        high = np.asarray(run.train_representations(epoch))
        low = np.load(content / "visualize" / "DVI" / "projection" / f"{epoch}.npy")
        values.append(neighbour_preserving(high, low[run.train_points], k).mean())
    return float(np.mean(values))


def test_log_file_gets_one_line_per_visualizer_epoch(demo_run, tmp_path):
    """Output to a file or pipe (here: captured) gets no bar redraws, one line per epoch, and
    none of Lightning's tips, repeated device banners or warnings about its internals."""
    run = copy_run(demo_run, tmp_path / "run")
    progress = "callbacks.progress_bar={_target_:ttvis.callbacks.progress_bar}"
    proc = run_train([f"content_path={run}", "epochs=[2,3]", progress], tmp_path)
    output = proc.stdout + proc.stderr
    assert "\r" not in output
    for line in ("DVI epoch 2 (1/2) · vis epoch 1/2", "DVI epoch 2 (1/2) · vis epoch 2/2"):
        assert re.search(rf"{re.escape(line)}: loss \d", output), output[-3000:]
    assert re.search(r"DVI epoch 3 \(2/2\) · vis epoch 1/\d: loss \d", output), output[-3000:]
    assert output.count("GPU available") == 1, output[-3000:]  # two fits, one banner, once
    for noise in ("Tip:", "`Trainer.fit` stopped", "LeafSpec", "in eval mode"):
        assert noise not in output, noise


def test_ddp_two_processes(demo_run, tmp_path):
    """Two processes do the optimisation one does (each draws half of every step's edges),
    so the maps keep as many neighbours; with half the steps they kept fewer."""
    settings = ["method.s_n_epochs=2", "method.batch_size=200", "trainer.max_epochs=4"]
    single = copy_run(demo_run, tmp_path / "single")
    run_train([f"content_path={single}", *settings], tmp_path / "1")
    content = copy_run(demo_run, tmp_path / "run")
    proc = run_train(
        [
            f"content_path={content}",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.strategy=ddp",
            *settings,
        ],
        tmp_path,
    )
    output = proc.stdout + proc.stderr
    assert "GLOBAL_RANK: 1" in output, "the second process never started"
    check_export(content, [1, 2, 3])
    one, two = (_mean_neighbour_preserving(c, [1, 2, 3]) for c in (single, content))
    assert two > one - 0.5, (one, two)


def test_ddp_spawn_two_processes(demo_run, tmp_path):
    # The prediction loss stays on: the module carries the subject head from the run's
    # model.py, which must survive pickling into the spawned processes.
    content = copy_run(demo_run, tmp_path / "run")
    proc = run_train(
        [
            f"content_path={content}",
            "epochs=[2,3]",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.strategy=ddp_spawn",
        ],
        tmp_path,
    )
    assert "GLOBAL_RANK: 1" in proc.stdout + proc.stderr
    check_export(content, [2, 3])


def test_boundary_complex_run(demo_run, tmp_path):
    content = copy_run(demo_run, tmp_path / "run")
    proc = run_train(
        # recon_rows below a batch's vertices: boundary vertices' prediction weights follow them
        [f"content_path={content}", "epochs=[2,3]", "method.b_n_epochs=1", "method.recon_rows=16"],
        tmp_path,
    )
    check_export(content, [2, 3])
    output = proc.stdout + proc.stderr
    found = re.findall(r"epoch (\d): complex of \d+ points and (\d+) boundary points", output)
    assert [e for e, _ in found] == ["2", "3"], output[-2000:]
    assert all(int(m) > 5 for _, m in found), found


def test_bf16_autocast_keeps_float32_exports(demo_run, tmp_path):
    """``trainer.precision=bf16-mixed`` trains under autocast; the exported files stay float32."""
    import torch

    content = copy_run(demo_run, tmp_path / "run")
    run_train([f"content_path={content}", "epochs=[1,2]", "trainer.precision=bf16-mixed"], tmp_path)
    vis = check_export(content, [1, 2])
    assert np.load(vis / "projection" / "2.npy").dtype == np.float32
    state = torch.load(vis / "vismodel" / "2.pth", weights_only=True)["state_dict"]
    assert {v.dtype for v in state.values()} == {torch.float32}
