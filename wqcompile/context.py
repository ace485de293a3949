"""The typed compile context: what analysis passes find and later passes use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import onnx

from wqcompile.config import QuantConfig
from wqcompile.quant import ActQuantizer, LogHistogram, WeightCodebook


@dataclass
class WeightLayer:
    """A Conv / Gemm / MatMul chosen for weight quantization (filled by SelectLayersPass)."""

    node: str                 # node name
    op_type: str              # "Conv" or "Gemm" (MatMul is normalised to Gemm-like [N, K] weights)
    weight: str               # name of the constant weight tensor
    input: str                # name of the activation input tensor
    bits: int | None          # None: keep the weights in full precision
    granularity: str = "tensor"   # "tensor", "channel" or "channel-scaled" (QuantConfig.granularity_for)


@dataclass
class ActLayer:
    """A Relu or ReLU-like Clip(0, max) whose output is log-quantized."""

    node: str
    output: str               # the activation tensor that is quantized
    input: str                # the pre-activation tensor
    bits: int
    clip_max: float | None    # Clip(0, m): quantize min(x, m)


@dataclass
class FittedWeights:
    """A weight tensor's codebook, as fitted (float) and as arranged for the op ([M, ...] rows)."""

    codebooks: list[WeightCodebook]   # one per tensor, or one per output channel
    bits: int
    matrix: np.ndarray                # the FP32 weight arranged [M, fan_in]: Conv [M, C/g·kH·kW], Gemm [N, K]
    row_scale: np.ndarray | None = None   # [M] scales of the ONE shared codebook (channel-scaled): ŵ_o = s_o · c[idx_o]

    def __post_init__(self) -> None:
        if self.row_scale is not None:
            if len(self.codebooks) != 1 or np.shape(self.row_scale) != (self.matrix.shape[0],):
                raise ValueError("a row scale needs one shared codebook and one scale per output channel")
            if not np.all(np.isfinite(self.row_scale)) or np.min(self.row_scale) < 0:
                raise ValueError("row scales must be finite and non-negative")


@dataclass
class CompileContext:
    """Typed analysis results shared by the passes of one compilation.

    Attributes:
        config: the compile configuration.
        calibration: an iterable of ``{input_name: ndarray}`` feed dicts (see :mod:`wqcompile.calib.readers`).
        source_model: the model as loaded (before any pass), used to compare against FP32.
        weight_layers / act_layers: what SelectLayersPass chose (node name → layer).
        stats: streaming log2 histograms per observed tensor (CalibratePass).
        weights: fitted codebooks per weight layer (FitWeightsPass).
        activations: fitted activation quantizers per quantized tensor (FitActivationsPass).
        bias_corrections: per-layer output shift added to the bias at rewrite (CorrectBiasPass).
        refined_layers: layers whose codebook values were refit on data (RefineCodebooksPass, or
            SequentialCalibratePass with refinement on).
        skipped: node name → reason it was left untouched.
        layer_report: node name → per-layer numbers (filled by rewrite and verify).
        verify: whole-model fidelity numbers (VerifyPass).
    """

    config: QuantConfig = field(default_factory=QuantConfig)
    calibration: Iterable[Mapping[str, np.ndarray]] | None = None
    source_model: onnx.ModelProto | None = None
    weight_layers: dict[str, WeightLayer] = field(default_factory=dict)
    act_layers: dict[str, ActLayer] = field(default_factory=dict)
    stats: dict[str, LogHistogram] = field(default_factory=dict)
    calib_samples: int = 0
    verify_feeds: list[dict[str, np.ndarray]] = field(default_factory=list)   # a few calibration batches kept for verify
    weights: dict[str, FittedWeights] = field(default_factory=dict)
    activations: dict[str, ActQuantizer] = field(default_factory=dict)
    bias_corrections: dict[str, np.ndarray] = field(default_factory=dict)
    refined_layers: set[str] = field(default_factory=set)     # codebooks already refined (RefineCodebooksPass)
    narrow_operands: dict[str, bool] = field(default_factory=dict)   # per weight layer, decided once (operand_width)
    narrow_float_shift: dict[str, int] = field(default_factory=dict)  # narrow float-input layers: x_shift of their s8 grid
    skipped: dict[str, str] = field(default_factory=dict)
    layer_report: dict[str, dict[str, Any]] = field(default_factory=dict)
    verify: dict[str, Any] = field(default_factory=dict)
    passes_run: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
