"""The viewer in a real browser (issue 18): Debian's headless Chromium through Selenium opens
the page from ``file://`` and checks what is drawn, on the synthetic run of ``viewdata``.

Skipped with the reason when Chromium, chromedriver or Selenium is missing, except under CI
(the ``CI`` environment variable set), where that is a failure: ``.ci/run`` installs them.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
import viewdata
from PIL import Image

from ttvis.export_folder import ExportFolder
from ttvis.run import TrainingRun
from ttvis.view import collect_view_data, write_viewer
from ttvis.view.headless import browser_missing, chromium, open_viewer

pytestmark = pytest.mark.slow

# The page settings of conf/view.yaml that the checks below depend on.
PAGE = {
    "renderer": "auto",
    "point_size": 6,
    "hover_radius": 8,
    "epoch_ms": 300,
    "background_opacity": 0.6,
    "faded_alpha": 0.06,
    "list_size": 10,
    "trail_width": 2,
    "zoom_speed": 0.002,
    "max_legend_classes": 40,
}
BLUE = (31, 119, 180)  # label 0 (cat) in the tab10 palette
ORANGE = (255, 127, 14)  # label 1 (dog)


@pytest.fixture(scope="module")
def driver():
    """One headless Chromium for the module."""
    reason = browser_missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"viewer browser tests need Chromium under CI: {reason}")
        pytest.skip(reason)
    with chromium() as d:
        yield d


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    """The viewer of the synthetic run's DVI and TimeVis exports."""
    root = viewdata.write_run(tmp_path_factory.mktemp("viewer") / "run")
    run = TrainingRun(root)
    data = collect_view_data(run, ExportFolder.named(root, ["DVI", "TimeVis"], None), 10)
    return write_viewer(data, root / "visualize" / "view", PAGE)


@pytest.fixture
def page(driver, index):
    """The viewer freshly loaded from file://, its data read."""
    driver.get_log("browser")  # forget earlier pages' messages
    state = open_viewer(driver, index)
    assert state["ready"], state["errors"]
    return driver


def state(d) -> dict:
    return d.execute_script("return window.ttvisView.state()")


def viewport_of(d, panel: int, sample: int) -> tuple[int, int]:
    """Viewport pixel of ``sample`` in ``panel`` at the shown frame."""
    x, y = d.execute_script(
        "const p = window.ttvisView.position(arguments[0], arguments[1]);"
        "return window.ttvisView.dataToViewport(arguments[0], p[0], p[1]);",
        panel,
        sample,
    )
    return int(round(x)), int(round(y))


def screenshot(d) -> np.ndarray:
    """The viewport as uint8 ``[H, W, 3]``."""
    return np.asarray(Image.open(io.BytesIO(d.get_screenshot_as_png())).convert("RGB"))


def near(pixel, colour, tolerance: int = 40) -> bool:
    return bool(np.abs(np.asarray(pixel, int) - np.asarray(colour, int)).max() <= tolerance)


def press(d, key: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(d).send_keys(key).perform()


def move_to(d, x: int, y: int, click: bool = False) -> None:
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    actions = ActionBuilder(d)
    actions.pointer_action.move_to_location(x, y)
    if click:
        actions.pointer_action.click()
    actions.perform()


def test_page_loads_from_file_without_console_errors(page):
    assert page.current_url.startswith("file://")
    now = state(page)
    assert now["epoch"] == 1 and now["errors"] == [] and now["visible"] == viewdata.N_SAMPLES
    software = any(name in now["webglRenderer"] for name in ("SwiftShader", "llvmpipe"))
    assert now["renderers"] == ["canvas" if software else "webgl"] * 2, now["webglRenderer"]
    severe = [e for e in page.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []
    status = page.find_element("id", "status").text
    assert status == f"{viewdata.N_SAMPLES} samples · {len(viewdata.EPOCHS)} epochs"


def test_changing_the_epoch_moves_the_drawn_points(page):
    from selenium.webdriver.common.keys import Keys

    before = screenshot(page)
    x, y = viewport_of(page, 0, 1)
    assert near(before[y, x], ORANGE)  # sample 1 (dog) drawn where epoch 1 puts it
    press(page, Keys.ARROW_RIGHT)
    assert state(page)["epoch"] == 2
    position = page.execute_script("return window.ttvisView.position(0, 1)")
    np.testing.assert_array_equal(np.float32(position), viewdata.positions(2)[1])
    after = screenshot(page)
    x2, y2 = viewport_of(page, 0, 1)
    assert (x2, y2) != (x, y) and near(after[y2, x2], ORANGE)
    assert not near(after[y, x], ORANGE)  # gone from where it was
    press(page, " ")  # play to the end: 2 -> 3 in epoch_ms
    deadline = time.monotonic() + 10
    while state(page)["playing"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert state(page)["epoch"] == 3 and not state(page)["playing"]
    assert len(page.execute_script("return window.ttvisView.frameTimes()")) >= 2


def test_hover_shows_the_tooltip_and_click_pins(page):
    from selenium.webdriver.common.keys import Keys

    press(page, Keys.END)
    x, y = viewport_of(page, 1, 5)  # the TimeVis panel; the hover is shared with DVI's
    move_to(page, x, y, click=True)
    tip = page.find_element("id", "tooltip")
    assert tip.is_displayed()
    logits = viewdata.logits(3)[5]
    confidence = np.exp(logits - logits.max()).max() / np.exp(logits - logits.max()).sum()
    assert tip.text.splitlines() == [
        "#5 · train",
        "label: bird",
        f"prediction: cat (confidence {confidence:.3f})  (misclassified)",
        "epoch 3",
        "predicted over epochs: cat (1-3)",
    ]
    now = state(page)
    assert now["hovered"] == 5 and now["pinned"] == [5]
    assert "#5 · bird" in page.find_element("id", "pinned").text
    press(page, Keys.ESCAPE)
    assert state(page)["pinned"] == []
    x, y = viewport_of(page, 0, 7)
    move_to(page, x, y)
    history = "predicted over epochs: dog (1) · bird (2) · cat (3)"  # logits(e): class e % 3
    assert tip.text.splitlines()[-1] == history


@pytest.mark.parametrize("renderer", ["webgl", "canvas"])
@pytest.mark.parametrize("epoch", [1, 3])
def test_the_background_lines_up_with_the_points(page, index, epoch, renderer):
    from selenium.webdriver.common.keys import Keys

    loaded = open_viewer(page, index, query=f"renderer={renderer}")
    assert loaded["renderers"] == [renderer, renderer]
    if epoch != 1:
        press(page, Keys.END)
    assert state(page)["epoch"] == epoch
    image = screenshot(page)
    x, y = viewport_of(page, 0, 0)  # sample 0: at the red square's centre
    x0, y0, x1, _ = viewdata.red_region(epoch)
    left = page.execute_script("return window.ttvisView.dataToViewport(0, ...arguments)", x0, y0)
    right = page.execute_script("return window.ttvisView.dataToViewport(0, ...arguments)", x1, y0)
    half = (right[0] - left[0]) / 2  # the square's half side on screen, CSS px
    assert half > 20
    assert near(image[y, x], BLUE)  # the point, drawn by WebGL or the canvas path
    faded_red = (255, 102, 102)  # red at background_opacity over white
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        inside = image[int(y + dy * (half - 4)), int(x + dx * (half - 4))]
        outside = image[int(y + dy * (half + 4)), int(x + dx * (half + 4))]
        assert near(inside, faded_red), (dx, dy, inside)
        assert near(outside, (255, 255, 255)), (dx, dy, outside)


def test_wheel_zooms_about_the_cursor_and_0_resets(page):
    x, y = viewport_of(page, 0, 0)
    box = state(page)["boxes"][0]
    page.execute_script(
        "const stage = document.querySelector('.stage');"
        "stage.dispatchEvent(new WheelEvent('wheel', {clientX: arguments[0], clientY: arguments[1],"
        " deltaY: -300, bubbles: true, cancelable: true}));",
        x,
        y,
    )
    zoomed = state(page)
    assert zoomed["zoom"]["k"] == pytest.approx(np.exp(0.6))
    width = zoomed["boxes"][0][2] - zoomed["boxes"][0][0]
    assert width == pytest.approx((box[2] - box[0]) / np.exp(0.6))
    assert viewport_of(page, 0, 0) == (x, y)  # the sample under the cursor stays there
    press(page, "0")
    assert state(page)["boxes"][0] == box


def test_filters_and_lists(page):
    page.find_element("id", "f-labels").send_keys("dog")
    dogs = int((viewdata.labels() == 1).sum())
    assert state(page)["visible"] == dogs
    page.find_element("id", "f-labels").clear()
    page.find_element("id", "f-index").send_keys("0-9")
    page.find_element("id", "f-wrong").click()
    wrong = viewdata.logits(1).argmax(1) != viewdata.labels()
    assert state(page)["visible"] == int(wrong[:10].sum())  # sample 5 (7 is right in epoch 1)
    first = page.find_element("css selector", "#list li")
    assert first.text.startswith("#7 · dog · 2 flips")
    first.click()
    assert state(page)["pinned"] == [7]
