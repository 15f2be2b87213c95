"""Exported artefacts: scale box, pixel geometry, atomic files and background images."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch
from matplotlib import image as mpl_image

from ttvis.export import (
    atomic_path,
    atomic_save_npy,
    atomic_save_png,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_text,
    class_palette,
    decision_colours,
    grid_points,
    pixel_of,
    projection_scale,
    render_background,
)

# ------------------------------------------------------------------ scale


def test_projection_scale_margin_and_square():
    points = np.array([[0.0, 0.0], [10.0, 2.0], [5.0, 1.0]])
    scale = projection_scale(points, margin=0.1)
    assert scale.dtype == np.float32 and scale.shape == (4,)
    # x: [0, 10] -> [-1, 11]; y: [0, 2] -> [-0.2, 2.2]; square: min of mins, max of maxes.
    np.testing.assert_allclose(scale, [-1.0, -1.0, 11.0, 11.0], rtol=1e-6)


def test_projection_scale_other_axis_and_margin():
    points = np.array([[1.0, -4.0], [2.0, 16.0]])
    np.testing.assert_allclose(projection_scale(points, margin=0.25), [-9, -9, 21, 21])
    np.testing.assert_allclose(projection_scale(points, margin=0.0), [-4, -4, 16, 16])


def test_projection_scale_covers_every_point_and_degenerate_input():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(500, 2)) * [3, 0.5] + [10, -2]
    x_min, y_min, x_max, y_max = projection_scale(points)
    assert x_min == y_min and x_max == y_max
    assert (points > x_min).all() and (points < x_max).all()
    single = projection_scale(np.array([[2.0, 3.0]]))
    assert single[0] < 2.0 and single[2] > 3.0 and np.isfinite(single).all()


# ------------------------------------------------------------------ grid and pixels


@pytest.mark.parametrize("scale", [[-1.0, -1.0, 1.0, 1.0], [2.0, -3.0, 6.0, 5.0]])
def test_grid_points_and_pixel_of_round_trip(scale):
    res = 7
    grid = grid_points(np.array(scale), res)
    assert grid.shape == (res * res, 2) and grid.dtype == np.float32
    rc = pixel_of(grid, np.array(scale), res)
    expected = np.array([(r, c) for r in range(res) for c in range(res)])
    np.testing.assert_array_equal(rc, expected)
    # Orientation: row 0 is y_max, the last row y_min; column 0 is x_min.
    x_min, y_min, x_max, y_max = scale
    top_left = grid[0]
    bottom_right = grid[-1]
    assert x_min < top_left[0] < (x_min + x_max) / 2 and top_left[1] > (y_min + y_max) / 2
    assert bottom_right[0] > (x_min + x_max) / 2 and bottom_right[1] < (y_min + y_max) / 2
    assert (np.diff(grid[:res, 0]) > 0).all()  # x grows along a row
    assert (np.diff(grid[::res, 1]) < 0).all()  # y falls down a column


def test_pixel_of_corners_and_clipping():
    scale = np.array([0.0, 0.0, 10.0, 10.0])
    pts = np.array([[0.01, 9.99], [9.99, 0.01], [0.01, 0.01], [9.99, 9.99], [-5, 50], [50, -5]])
    rc = pixel_of(pts, scale, 10)
    np.testing.assert_array_equal(rc, [[0, 0], [9, 9], [9, 0], [0, 9], [0, 0], [9, 9]])


# ------------------------------------------------------------------ atomic writes


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_atomic_writes_round_trip_and_leave_no_temp_files(tmp_path):
    arr = np.arange(12, dtype=np.float32).reshape(6, 2)
    atomic_save_npy(tmp_path / "sub" / "a.npy", arr)  # creates the folder
    atomic_torch_save(tmp_path / "sub" / "m.pth", {"w": torch.ones(3), "dims": [1, 2]})
    atomic_write_text(tmp_path / "sub" / "t.txt", "héllo")
    image = np.zeros((5, 8, 3), np.uint8)
    image[1, 2] = [255, 0, 0]
    image[4, 7] = [10, 200, 30]
    atomic_save_png(tmp_path / "sub" / "i.png", image)
    assert _names(tmp_path / "sub") == ["a.npy", "i.png", "m.pth", "t.txt"]
    np.testing.assert_array_equal(np.load(tmp_path / "sub" / "a.npy"), arr)
    state = torch.load(tmp_path / "sub" / "m.pth", weights_only=True)
    assert torch.equal(state["w"], torch.ones(3)) and state["dims"] == [1, 2]
    assert (tmp_path / "sub" / "t.txt").read_text(encoding="utf-8") == "héllo"
    png = mpl_image.imread(tmp_path / "sub" / "i.png")
    assert png.shape[:2] == (5, 8)
    np.testing.assert_array_equal(np.rint(png[..., :3] * 255).astype(np.uint8), image)
    # Overwriting replaces the content, still without leftovers.
    atomic_save_npy(tmp_path / "sub" / "a.npy", arr * 2)
    np.testing.assert_array_equal(np.load(tmp_path / "sub" / "a.npy"), arr * 2)
    assert _names(tmp_path / "sub") == ["a.npy", "i.png", "m.pth", "t.txt"]


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "shared.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # like open(); not mkstemp's 0600


def test_failed_atomic_write_keeps_old_file(tmp_path):
    target = tmp_path / "x.bin"
    atomic_write_bytes(target, b"old content")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # fails inside the write
    assert target.read_bytes() == b"old content"
    with pytest.raises(Exception):  # noqa: B017  (any pickling error)
        atomic_torch_save(tmp_path / "f.pth", {"f": lambda: 0})
    assert _names(tmp_path) == ["x.bin"]


def test_atomic_path_for_writers_that_need_a_file_name(tmp_path):
    target = tmp_path / "out" / "run.mp4"
    with atomic_path(target, suffix=".mp4") as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".mp4" and not target.exists()
        tmp.write_bytes(b"frames")
    assert target.read_bytes() == b"frames"
    with pytest.raises(RuntimeError), atomic_path(target, suffix=".mp4") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("encoder died")
    assert target.read_bytes() == b"frames"
    assert _names(target.parent) == ["run.mp4"]


# ------------------------------------------------------------------ background


def _split_head(reps: torch.Tensor) -> torch.Tensor:
    """Class 0 for x < 0, class 1 for x > 0, more confident further from x = 0."""
    return torch.stack([-20 * reps[:, 0], 20 * reps[:, 0]], 1)


def _nearest_class(pixels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Palette index of each pixel after undoing the fade to white (best strength per class)."""
    p = pixels.reshape(-1, 3).astype(np.float64) / 255.0
    errors = []
    for colour in palette.astype(np.float64):
        d = colour - 1.0
        s = np.clip(((p - 1.0) @ d) / (d @ d), 0.0, 1.0)
        errors.append(np.linalg.norm(1.0 - s[:, None] * (1.0 - colour) - p, axis=1))
    return np.argmin(np.stack(errors, 1), 1).reshape(pixels.shape[:-1])


def test_render_background_left_and_right(tmp_path):
    palette = class_palette(2)
    res = 20
    image = render_background(
        lambda z: z,  # decoder: identity into a 2-d "representation"
        _split_head,
        np.array([-1.0, -1.0, 1.0, 1.0]),
        res,
        palette,
        batch_size=37,  # several batches
    )
    assert image.shape == (res, res, 3) and image.dtype == np.uint8
    classes = _nearest_class(image, palette)
    assert (classes[:, : res // 2] == 0).all()
    assert (classes[:, res // 2 :] == 1).all()
    # Far from the boundary the colour is the full class colour.
    expected_left = np.rint(palette[0] * 255)
    expected_right = np.rint(palette[1] * 255)
    np.testing.assert_allclose(image[:, 0], np.tile(expected_left, (res, 1)), atol=1)
    np.testing.assert_allclose(image[:, -1], np.tile(expected_right, (res, 1)), atol=1)
    # Next to x = 0 the top-2 gap is small: faded towards white.
    assert image[:, res // 2 - 1].min() > image[:, 0].min()


def test_render_background_top_and_bottom():
    """A head that splits on y: class 1 must be in the top rows (row 0 is y_max)."""
    palette = class_palette(2)
    image = render_background(
        lambda z: z.flip(1), _split_head, np.array([-2.0, -2.0, 2.0, 2.0]), 10, palette
    )
    classes = _nearest_class(image, palette)
    assert (classes[:5] == 1).all() and (classes[5:] == 0).all()


def test_render_background_white_without_head():
    image = render_background(lambda z: z, None, np.array([0, 0, 1, 1.0]), 13, None)
    assert image.shape == (13, 13, 3) and (image == 255).all()
    image = render_background(lambda z: z, _split_head, np.array([0, 0, 1, 1.0]), 5, None)
    assert (image == 255).all()


def test_decision_colours_strength():
    palette = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], np.float32)
    logits = torch.tensor([[10.0, -10.0], [0.0, 0.05], [0.0, 1.0]])
    colours = decision_colours(
        logits, palette, boundary_gap=0.15, boundary_strength=0.1, min_strength=0.3
    )
    np.testing.assert_allclose(colours[0], [0.0, 0.0, 1.0], atol=1e-6)  # confident: full colour
    np.testing.assert_allclose(colours[1], [1.0, 0.9, 0.9], atol=1e-6)  # boundary: 0.1 strength
    gap = float(torch.softmax(logits[2], 0)[1] - torch.softmax(logits[2], 0)[0])
    s = 0.3 + 0.7 * (gap - 0.15) / 0.85
    np.testing.assert_allclose(colours[2], [1.0, 1 - s, 1 - s], atol=1e-5)


def test_class_palette_sizes():
    assert class_palette(10).shape == (10, 3)
    for n in (3, 10, 15, 30):
        pal = class_palette(n)
        assert pal.shape == (n, 3) and pal.min() >= 0 and pal.max() <= 1
        assert len({tuple(c) for c in pal.round(4)}) == n, "colours must be distinct"
