"""The default activation levels: Lloyd's minimum-MSE set up to 16 levels, the segmented set above.

Up to 16 levels Lloyd's algorithm converges from its starts (on Open-NSFW's 50 calibration histograms at 16 levels:
Lloyd 24.1 dB mean activation SQNR, segmented 23.5) and the runtime counts ≤ 15 thresholds in registers whatever
their spacing. From 32 levels on its levels barely leave their start (64 levels: Lloyd 33.3 dB, segmented 35.0; 256:
41.2 and 46.9) and its irregular thresholds cost a gather per output, while the segmented set's runs of even
spacing cost arithmetic only (ThresholdTable::runs). docs/decisions.md has the measurements.
"""

from __future__ import annotations

from .act_quantizer import ActQuantizer
from .lloyd_act import fit_lloyd_act
from .log_histogram import LogHistogram
from .segmented_act import fit_segmented_act

MAX_LLOYD_LEVELS = 16


def fit_auto_act(hist: LogHistogram, levels: int, **options) -> ActQuantizer:
    """``fit_lloyd_act`` for ``levels ≤ MAX_LLOYD_LEVELS``, else ``fit_segmented_act`` (same arguments)."""
    fit = fit_lloyd_act if int(levels) <= MAX_LLOYD_LEVELS else fit_segmented_act
    return fit(hist, levels, **options)
