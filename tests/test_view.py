"""The viewer's writer and command (issue 18) without a browser: the data files decode to the
exported values, bad input exits 2 before anything is written, output folders are replaced
only when they hold a viewer, and ``serve=true`` serves the page."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import viewdata
from conftest import REPO_ROOT, train_env

from ttvis.export_folder import ExportError, ExportFolder
from ttvis.run import TrainingRun
from ttvis.view import collect_view_data, write_viewer
from ttvis.view.encode import decode_array, encode_array, read_register_call
from ttvis.view.page import STATIC_FILES, check_output_dir

PAGE = {"point_size": 4, "hover_radius": 8}
METRICS = {"epochs": {"2": {"nn_train": 7.5, "ppr_test": None}}, "vis": "DVI"}


@pytest.fixture(scope="module")
def view_run(tmp_path_factory) -> Path:
    """The synthetic run (read-only for tests), DVI with a metrics.json."""
    root = viewdata.write_run(tmp_path_factory.mktemp("view") / "run")
    (root / "visualize" / "DVI" / "metrics.json").write_text(json.dumps(METRICS))
    return root


def read_data(folder: Path, name: str) -> dict:
    """The payload of the viewer's data file ``name`` (``data/...js``)."""
    return read_register_call((folder / name).read_text(encoding="utf-8"))


def run_view(args: list[str], tmp_path: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m ttvis.view ARGS`` with Hydra's folder in ``tmp_path`` and no display."""
    env = train_env(tmp_path)
    for name in ("DISPLAY", "WAYLAND_DISPLAY"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "ttvis.view", *args, f"hydra.run.dir={tmp_path / 'hydra'}"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int32", "float32"])
def test_arrays_round_trip(dtype):
    array = (np.arange(24).reshape(4, 3, 2) * 7.25).astype(dtype)
    encoded = encode_array(array)
    assert encoded["dtype"] == dtype and encoded["shape"] == [4, 3, 2]
    np.testing.assert_array_equal(decode_array(encoded), array)


def test_data_files_decode_to_the_exported_values(view_run, tmp_path):
    run = TrainingRun(view_run)
    folders = ExportFolder.named(view_run, ["DVI", "TimeVis"], None)
    index = write_viewer(collect_view_data(run, folders, 5), tmp_path / "view", PAGE)
    out = index.parent
    assert sorted(p.name for p in out.iterdir()) == sorted([*STATIC_FILES, "bg", "data"])
    manifest = read_data(out, "data/manifest.js")
    assert manifest["epochs"] == list(viewdata.EPOCHS)
    assert manifest["classes"] == viewdata.CLASSES and manifest["page"] == PAGE
    assert [v["name"] for v in manifest["visualizers"]] == ["DVI", "TimeVis"]
    samples = read_data(out, "data/samples.js")
    np.testing.assert_array_equal(decode_array(samples["labels"]), viewdata.labels())
    split = decode_array(samples["split"])
    assert (split[: viewdata.N_TRAIN] == 0).all() and (split[viewdata.N_TRAIN :] == 1).all()
    for epoch in viewdata.EPOCHS:
        data = read_data(out, f"data/epoch_{epoch}.js")
        logits = viewdata.logits(epoch)
        np.testing.assert_array_equal(decode_array(data["prediction"]), logits.argmax(1))
        softmax = np.exp(logits - logits.max(1, keepdims=True))
        expected = (softmax / softmax.sum(1, keepdims=True)).max(1)
        np.testing.assert_allclose(decode_array(data["confidence"]), expected, rtol=1e-6)
        for k, vis in enumerate(("DVI", "TimeVis")):
            exported = np.load(view_run / "visualize" / vis / "projection" / f"{epoch}.npy")
            np.testing.assert_array_equal(decode_array(data["positions"][k]), exported)
            entry = manifest["visualizers"][k]
            assert entry["scales"][str(epoch)] == list(viewdata.SCALES[epoch])
            copied = out / entry["backgrounds"][str(epoch)]
            original = view_run / "visualize" / vis / "bgimg" / f"{epoch}.png"
            assert copied.read_bytes() == original.read_bytes()
        correct = logits.argmax(1) == viewdata.labels()
        assert manifest["accuracy"][str(epoch)] == {
            "train": pytest.approx(correct[: viewdata.N_TRAIN].mean()),
            "test": pytest.approx(correct[viewdata.N_TRAIN :].mean()),
        }
    assert manifest["flips"][0] == [7, 2]  # the one sample whose prediction changes
    assert manifest["visualizers"][0]["metrics"] == {"2": METRICS["epochs"]["2"]}
    assert manifest["visualizers"][1]["metrics"] is None
    assert len(manifest["visualizers"][0]["moves"]) == 5


def test_view_command_writes_and_replaces_the_viewer(view_run, tmp_path):
    out = tmp_path / "viewer"
    for _ in range(2):  # the second run replaces the first viewer
        proc = run_view([f"content_path={view_run}", f"output_dir={out}"], tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"wrote {out / 'index.html'}" in proc.stdout
        assert "no browser here" in proc.stdout  # open=true, but no display
    assert (out / "index.html").is_file() and (out / "bg" / "0" / "3.png").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        ("scale", "scale/2.npy: file not found"),
        ("bgimg", "bgimg/2.png: file not found; expected the epoch's background image"),
        ("run", "no such folder"),
        ("vis", "no exports under"),
    ],
)
def test_bad_input_exits_2_before_writing(view_run, tmp_path, breakage, expected):
    run = tmp_path / "run"
    viewdata.write_run(run)
    args = [f"content_path={run}"]
    if breakage in ("scale", "bgimg"):
        suffix = "npy" if breakage == "scale" else "png"
        (run / "visualize" / "DVI" / breakage / f"2.{suffix}").unlink()
    elif breakage == "run":
        args = [f"content_path={tmp_path / 'nowhere'}"]
    else:
        args.append("vis=[DVI,Nothing]")
    proc = run_view([*args, f"output_dir={tmp_path / 'out'}"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ttvis.view: ") and expected in lines[0]
    assert not (tmp_path / "out").exists()
    assert not (run / "visualize" / "view").exists()


def test_output_dir_is_replaced_only_when_it_holds_a_viewer(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="holds files but no data/manifest.js"):
        check_output_dir(tmp_path / "mine")
    (tmp_path / "file").write_text("")
    with pytest.raises(ExportError, match="a file; expected a folder"):
        check_output_dir(tmp_path / "file")
    assert check_output_dir(tmp_path / "new" / "view") == tmp_path / "new" / "view"


def test_broken_metrics_json_is_named(view_run, tmp_path):
    run = tmp_path / "run"
    viewdata.write_run(run, vis=("DVI",))
    (run / "visualize" / "DVI" / "metrics.json").write_text("[1, 2]")
    with pytest.raises(ExportError, match="metrics.json: not evaluate.py's metrics"):
        collect_view_data(TrainingRun(run), [ExportFolder.of(run, "DVI")], 5)


def test_serve_serves_the_viewer(view_run, tmp_path):
    out = tmp_path / "viewer"
    env = train_env(tmp_path)
    env.pop("DISPLAY", None)
    args = [f"content_path={view_run}", f"output_dir={out}", "serve=true", "port=0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ttvis.view", *args, f"hydra.run.dir={tmp_path / 'hydra'}"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stdout:
            if line.startswith("serving"):
                break
        url = line.split(" at ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "data/manifest.js", timeout=10) as response:
            assert response.read().startswith(b"ttvisRegister(")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_several_points_per_sample(tmp_path):
    """Runs with ``[N, F, D]`` representations: F points per sample, lists per sample."""
    root = viewdata.write_run(tmp_path / "run", vis=())
    for epoch in viewdata.EPOCHS:
        rep = np.random.default_rng(epoch).random((viewdata.N_SAMPLES, 2, 4), np.float32)
        np.save(root / "dataset" / "representation" / f"{epoch}.npy", rep)
    folder = viewdata.write_export(root / "visualize" / "DVI")
    for epoch in viewdata.EPOCHS:  # two points per sample; sample 3's second one moves far
        pos = np.repeat(viewdata.positions(epoch), 2, axis=0)
        pos[7, 0] += 50.0 * (epoch % 2)
        np.save(folder / "projection" / f"{epoch}.npy", pos)
    data = collect_view_data(TrainingRun(root), [ExportFolder.of(root, "DVI")], 3)
    assert data.n_features == 2 and data.visualizers[0].positions[1].shape == (80, 2)
    assert data.visualizers[0].moves[0][0] == 3
