"""The graph passes of wqcompile, one per file, and the default pipeline.

Imported as ``wqcompile.passes`` (this folder is mapped into the package at build time; never ``import passes``).
"""

from __future__ import annotations

from wqcompile.pass_manager import Pass, PassManager, PassResult
from wqcompile.passes.calibrate import CalibratePass
from wqcompile.passes.canonicalize import CanonicalizePass
from wqcompile.passes.correct_bias import CorrectBiasPass
from wqcompile.passes.fit_activations import FitActivationsPass
from wqcompile.passes.fit_weights import FitWeightsPass
from wqcompile.passes.fold_batchnorm import FoldBatchNormPass
from wqcompile.passes.refine_codebooks import RefineCodebooksPass
from wqcompile.passes.rewrite import RewritePass
from wqcompile.passes.scale_codebooks import ScaleCodebooksPass
from wqcompile.passes.select_layers import SelectLayersPass
from wqcompile.passes.sequential_calibrate import SequentialCalibratePass
from wqcompile.passes.verify import VerifyPass


def default_pipeline() -> list[Pass]:
    """Fresh instances of the default passes, in order (edit the list to drop, add or reorder passes).

    canonicalize → fold BatchNorm → select layers → calibrate → fit weights → scale codebooks → fit activations →
    sequential calibration → refine codebooks → correct biases → rewrite → verify. The scale, sequential, refine and
    bias passes do nothing unless their config option is on.
    """
    return [
        CanonicalizePass(),
        FoldBatchNormPass(),
        SelectLayersPass(),
        CalibratePass(),
        FitWeightsPass(),
        ScaleCodebooksPass(),
        FitActivationsPass(),
        SequentialCalibratePass(),
        RefineCodebooksPass(),
        CorrectBiasPass(),
        RewritePass(),
        VerifyPass(),
    ]


__all__ = [
    "Pass", "PassManager", "PassResult", "default_pipeline", "CanonicalizePass", "FoldBatchNormPass",
    "SelectLayersPass", "CalibratePass", "FitWeightsPass", "FitActivationsPass", "CorrectBiasPass", "RewritePass",
    "VerifyPass", "ScaleCodebooksPass", "SequentialCalibratePass", "RefineCodebooksPass",
]
