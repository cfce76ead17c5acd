"""Tests for glu_scaling.plots' axis labelling: log-axis labels in Unicode superscripts
(no mathtext to parse), on the ticks matplotlib labels."""

from __future__ import annotations

import numpy as np
import pytest

from glu_scaling import plots


@pytest.fixture
def plt():
    plots.import_pyplot()
    return plots._mpl()


def _tick_labels(fig, axis) -> dict[float, str]:
    fig.canvas.draw()
    lo, hi = sorted(axis.get_view_interval())
    ticks = [t for t in [*axis.get_major_ticks(), *axis.get_minor_ticks()] if lo <= t.get_loc() <= hi]
    return {float(f"{t.get_loc():.12g}"): t.label1.get_text() for t in ticks if t.label1.get_text()}


def test_decades_are_written_in_superscripts(plt):
    fig, ax = plt.subplots()
    ax.set_yscale("log")
    ax.set_ylim(3e-7, 2.0)
    plots.superscript_decades(ax.yaxis)
    labels = _tick_labels(fig, ax.yaxis)
    assert labels == {1e-6: "10⁻⁶", 1e-5: "10⁻⁵", 1e-4: "10⁻⁴", 1e-3: "10⁻³", 1e-2: "10⁻²", 1e-1: "10⁻¹",
                      1.0: "10⁰"}
    assert not any("$" in text for text in labels.values())
    plt.close(fig)


def test_two_digit_exponents_and_labels_between_decades(plt):
    fig, ax = plt.subplots()
    ax.set_yscale("log")
    plots.superscript_decades(ax.yaxis)
    formatter = ax.yaxis.get_major_formatter()
    formatter.set_locs([1e-12, 1e-11, 1e-10])
    assert formatter(1e-12) == "10⁻¹²" and formatter(1e10) == "10¹⁰" and formatter(10.0) == "10¹"
    assert formatter(np.float32(1e-3)) == "10⁻³"  # not 10×10⁻⁴: float32 rounds 1e-3 down
    # under a decade matplotlib labels some of 2, 3, ... x 10^k: the same ticks, in superscripts
    ax.set_ylim(1.5e-3, 9e-3)
    labels = _tick_labels(fig, ax.yaxis)
    assert labels and all(text == f"{round(loc * 1e3)}×10⁻³" for loc, text in labels.items())
    plt.close(fig)


def test_convergence_axes_use_superscript_decades(plt):
    records = [{"arch": "glu", "n_hidden": n, "n_params": 5 * n + 1, "seed": 0, "status": "ok",
                "test_rmse": 0.3 * float(n) ** -3.0} for n in (1, 2, 4, 8, 16, 32)]
    fig, ax = plt.subplots()
    plots.convergence_axes(ax, records)
    labels = _tick_labels(fig, ax.yaxis)
    assert "10⁻³" in labels.values() and not any("$" in text for text in labels.values())
    plt.close(fig)
