"""Check a whole composed config before any work (docs/design.md §9).

Each setting that has a valid range is a :class:`Rule`: its dotted key, what it must be, and
optionally when it applies. :func:`check_config` applies a table of rules to a config and
raises one :class:`ConfigError` whose one-line message names the first bad setting, its value
and what is expected. Keys a config does not have (TimeVis has no ``lambda2``, DVI no
``sampling``) are skipped. Tables: :data:`TRAIN_RULES` (train.py), :data:`EVALUATE_RULES`
(evaluate.py), :data:`PLOT_COMMAND_RULES` (``python -m ttvis.plot``), :data:`VIEW_RULES`
(``python -m ttvis.view``); :data:`PLOT_RULES`, the
``plots.*`` block, is shared by the commands and :class:`ttvis.plot.PlotSettings`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "EVALUATE_RULES",
    "PLOT_COMMAND_RULES",
    "PLOT_RULES",
    "TRAIN_RULES",
    "VIEW_RULES",
    "ConfigError",
    "Rule",
    "check_config",
]

_MISSING = object()


class ConfigError(ValueError):
    """A setting outside its valid range: ``key=value: expected ...`` on one line."""


@dataclass(frozen=True)
class Rule:
    """One setting's valid range.

    Attributes:
        key: dotted config key, e.g. ``"method.n_neighbors"``.
        test: True when the (present) value is valid.
        expected: what a valid value is, for the message ("an integer >= 2").
        when: the rule applies only when this is True of the whole config (None: always).
        optional: a null value is valid.
    """

    key: str
    test: Callable[[Any], bool]
    expected: str
    when: Callable[[Mapping], bool] | None = None
    optional: bool = False


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def int_at_least(low: int) -> tuple[Callable[[Any], bool], str]:
    """``(test, expected)`` of an integer ``>= low``."""
    return (lambda v: _integer(v) and v >= low), f"an integer >= {low}"


def number_at_least(low: float) -> tuple[Callable[[Any], bool], str]:
    """``(test, expected)`` of a finite number ``>= low``."""
    return (lambda v: _number(v) and v >= low), f"a number >= {low:g}"


def positive() -> tuple[Callable[[Any], bool], str]:
    """``(test, expected)`` of a finite number ``> 0``."""
    return (lambda v: _number(v) and v > 0), "a number > 0"


def share(open_low: bool = False) -> tuple[Callable[[Any], bool], str]:
    """``(test, expected)`` of a share in ``[0, 1]`` (``(0, 1]`` when ``open_low``)."""
    if open_low:
        return (lambda v: _number(v) and 0 < v <= 1), "a share in (0, 1]"
    return (lambda v: _number(v) and 0 <= v <= 1), "a share in [0, 1]"


def one_of(*choices: str) -> tuple[Callable[[Any], bool], str]:
    """``(test, expected)`` of one of ``choices`` (case-insensitive)."""
    return (lambda v: isinstance(v, str) and v.lower() in choices), "one of " + ", ".join(choices)


def _text() -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, str) and v != ""), "a non-empty string"


def _is_epochs(v: Any) -> bool:
    items = v if isinstance(v, Sequence) and not isinstance(v, str) else [v]
    return len(items) > 0 and all(_integer(e) and e >= 1 for e in items)


def _is_vis(v: Any) -> bool:
    items = v.split(",") if isinstance(v, str) else v
    return (
        isinstance(items, Sequence)
        and len(items) > 0
        and all(isinstance(n, str) and n.strip() for n in items)
    )


EPOCHS_RULE = Rule("epochs", _is_epochs, "null, an epoch >= 1 or a list of them", optional=True)
VIS_RULE = Rule("vis", _is_vis, "one or more export folder names (vis=DVI or vis=[DVI,TimeVis])")


def _rules(when: Callable[[Mapping], bool] | None = None, optional: bool = False, **checks):
    """Rules from ``key=(test, expected)`` pairs, dots written as ``__``."""
    return tuple(
        Rule(key.replace("__", "."), test, expected, when, optional)
        for key, (test, expected) in checks.items()
    )


def _kcenter(cfg: Mapping) -> bool:
    return str(_select(cfg, "method.sampling", "none")).lower() == "kcenter"


def _shared_normalisation(cfg: Mapping) -> bool:
    return str(_select(cfg, "method.normalisation", "epoch")).lower() == "shared"


def _boundary_complex(cfg: Mapping) -> bool:
    value = _select(cfg, "method.b_n_epochs", 0)
    return _number(value) and value > 0


def _is_rect(v: Any) -> bool:
    return (
        isinstance(v, Sequence)
        and len(v) == 4
        and all(_number(x) and 0 <= x <= 1 for x in v)
        and v[2] > 0
        and v[3] > 0
    )


PLOT_RULES: tuple[Rule, ...] = _rules(
    plots__size=int_at_least(1),
    plots__dpi=int_at_least(1),
    plots__font_size=positive(),
    plots__title_size=positive(),
    plots__background_alpha=share(),
    plots__reference_points=int_at_least(1),
    plots__marker_size=positive(),
    plots__min_marker_size=positive(),
    plots__alpha=share(),
    plots__min_alpha=share(),
    plots__test_edge_width=number_at_least(0),
    plots__ring_scale=positive(),
    plots__ring_width=number_at_least(0),
    plots__misclassified_min_alpha=share(),
    plots__legend_max_classes=int_at_least(0),
    plots__legend_columns=int_at_least(1),
    plots__legend_marker_size=positive(),
    plots__trajectories=int_at_least(0),
    plots__trajectory_width=positive(),
    plots__animation_format=one_of("gif", "mp4"),
    plots__animation_size=int_at_least(1),
    plots__frame_ms=int_at_least(1),
    plots__loop=int_at_least(0),
    plots__background_interpolation=_text(),
    plots__train_marker=_text(),
    plots__test_marker=_text(),
    plots__test_edge_color=_text(),
    plots__plain_color=_text(),
) + (Rule("plots.axes_rect", _is_rect, "[left, bottom, width, height], figure shares in [0, 1]"),)
# Sections whose every key must be one of the rules' keys (a misspelt key is an error).
CLOSED_SECTIONS = ("plots", "page")

_BOUNDARY_RULES = _rules(
    boundary__fraction=share(open_low=True),
    boundary__delta=(lambda v: _number(v) and 0 < v < 1, "a number in (0, 1)"),
)
# Bisection steps: the boundary complex's, the flips' of the points near them and evaluate.py's.
_BOUNDARY_STEPS_RULES = _rules(boundary__steps=int_at_least(1))

TRAIN_RULES: tuple[Rule, ...] = (
    _rules(
        method__n_neighbors=int_at_least(2),
        method__t_n_neighbors=int_at_least(1),
        method__s_n_epochs=positive(),
        method__t_n_epochs=number_at_least(0),
        method__b_n_epochs=number_at_least(0),
        method__batch_size=int_at_least(1),
        method__exact_knn_below=int_at_least(0),
        method__lambda1=number_at_least(0),
        method__lambda_pred=number_at_least(0),
        method__lambda2=number_at_least(0),
        method__lambda_anchor=number_at_least(0),
        method__lambda_layout=number_at_least(0),
        method__class_weight=share(),
        method__anchor_power=number_at_least(0),
        method__anchor_fraction=share(open_low=True),
        method__anchor_min_weight=share(),
        method__mix_fraction=share(),
        method__mix_noise=number_at_least(0),
        method__boundary_mix_fraction=share(),
        method__boundary_mix_width=share(open_low=True),
        method__negative_sample_rate=int_at_least(1),
        method__repulsion_strength=number_at_least(0),
        method__spread=positive(),
        method__min_dist=number_at_least(0),
        method__epoch_balance=number_at_least(0),
        method__sampling=one_of("none", "kcenter"),
        method__normalisation=one_of("epoch", "shared"),
        method__optimizer__lr=positive(),
        export__resolution=int_at_least(1),
        export__scale_margin=number_at_least(0),
        export__batch_size=int_at_least(1),
        export__boundary_gap=share(),
        export__boundary_strength=share(),
        export__min_strength=share(),
        export__max_linear_residual=positive(),
        seed=int_at_least(0),
    )
    + (EPOCHS_RULE,)
    + _rules(
        optional=True,
        method__max_epochs=int_at_least(1),
        method__warm_max_epochs=int_at_least(1),
        method__warm_min_epochs=int_at_least(1),
        method__warm_ramp_epochs=number_at_least(0),
        method__layout_epochs=int_at_least(1),
        method__max_draws_per_epoch=int_at_least(1),
        method__recon_rows=int_at_least(1),
        method__negatives_epoch_window=int_at_least(0),
        trainer__max_epochs=int_at_least(1),
        method__gradient_clip_val=positive(),
    )
    + _rules(
        when=_kcenter,
        method__kcenter__fraction=share(open_low=True),
        method__kcenter__max_fraction=share(open_low=True),
    )
    + tuple(Rule("method." + r.key, r.test, r.expected, _boundary_complex) for r in _BOUNDARY_RULES)
    + tuple(Rule("method." + r.key, r.test, r.expected) for r in _BOUNDARY_STEPS_RULES)
    + (
        Rule("method.epoch_bias", lambda v: isinstance(v, bool), "true or false"),
        Rule("method.step_graph", lambda v: isinstance(v, bool), "true or false"),
        Rule(
            "method.epoch_bias",
            lambda v: v is False,
            "false with method.normalisation=shared (per-epoch biases go with per-epoch "
            "normalisation)",
            _shared_normalisation,
        ),
    )
    + PLOT_RULES
)

EVALUATE_RULES: tuple[Rule, ...] = (
    (VIS_RULE,)
    + _rules(k=int_at_least(1), batch_size=int_at_least(1), seed=int_at_least(0))
    + _rules(max_linear_residual=positive())
    + _BOUNDARY_RULES
    + _BOUNDARY_STEPS_RULES
)

PLOT_COMMAND_RULES: tuple[Rule, ...] = (VIS_RULE, EPOCHS_RULE, *PLOT_RULES)


def _boolean() -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, bool)), "true or false"


VIEW_RULES: tuple[Rule, ...] = (VIS_RULE, EPOCHS_RULE) + _rules(
    view_name=_text(),
    open=_boolean(),
    serve=_boolean(),
    host=_text(),
    port=(lambda v: _integer(v) and 0 <= v <= 65535, "an integer in 0..65535"),
    page__renderer=one_of("auto", "webgl", "canvas"),
    page__point_size=positive(),
    page__hover_radius=positive(),
    page__epoch_ms=positive(),
    page__background_opacity=share(),
    page__faded_alpha=share(),
    page__list_size=int_at_least(0),
    page__trail_width=positive(),
    page__zoom_speed=positive(),
    page__max_legend_classes=int_at_least(0),
)


def _select(cfg: Mapping, key: str, default: Any = _MISSING) -> Any:
    """``cfg``'s value at the dotted ``key`` (resolved), or ``default`` when absent."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def _plain(value: Any) -> Any:
    """An OmegaConf list or dict as a plain Python one (for tests and messages)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf ships with hydra
        return value
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def check_config(cfg: Mapping, rules: Sequence[Rule] = TRAIN_RULES) -> None:
    """Apply ``rules`` to ``cfg`` (a DictConfig or nested dict); keys absent from it are skipped.

    Raises:
        ConfigError: the first failing rule, as ``key=value: expected ...``.
    """
    for section in CLOSED_SECTIONS:
        known = {r.key.split(".", 1)[1] for r in rules if r.key.startswith(section + ".")}
        given = _select(cfg, section, None)
        unknown = sorted(set(given) - known) if known and isinstance(given, Mapping) else []
        if unknown:
            raise ConfigError(
                f"{section}.{unknown[0]}={_plain(given[unknown[0]])!r}: unknown setting; "
                f"expected one of {', '.join(sorted(known))}"
            )
    for rule in rules:
        value = _plain(_select(cfg, rule.key))
        if value is _MISSING or (value is None and rule.optional):
            continue
        if rule.when is not None and not rule.when(cfg):
            continue
        if not rule.test(value):
            raise ConfigError(f"{rule.key}={value!r}: expected {rule.expected}")
