"""Typed compile configuration.

Every CLI flag maps to exactly one field of :class:`QuantConfig`. Per-layer overrides are an ordered list of
:class:`LayerOverride`; later entries win (like torch.ao's ``QConfigMapping``, in increasing match priority).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from wqcompile.errors import ConfigError

MIN_BITS, MAX_BITS = 1, 8
WEIGHT_QUANTIZER_NAMES = ("wq", "linear", "log", "kmeans")
ACT_QUANTIZER_NAMES = ("wq", "linear", "miyashita", "logmse", "lloyd", "segmented", "auto")
REFINEMENT_TARGETS = ("same-input", "fp32")
MANTISSA_WIDTHS = ("auto", "8", "16")


def parse_bits(text: str | int | None, what: str) -> int | None:
    """Parse a bit width: an integer in 1..8, or ``f`` / ``None`` for full precision."""
    if text is None:
        return None
    if isinstance(text, str) and text.strip().lower() in ("f", "fp", "float", "fp32"):
        return None
    try:
        bits = int(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be an integer in {MIN_BITS}..{MAX_BITS} or 'f', got {text!r}") from None
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"{what} must be in {MIN_BITS}..{MAX_BITS} or 'f' (full precision), got {bits}")
    return bits


NODE_KINDS = ("depthwise", "depthwise-input")   # "@kind" patterns; a node's kinds come from wqcompile.layers.node_kinds


def node_matches(pattern: str, name: str, op_type: str, kinds: frozenset[str] = frozenset()) -> bool:
    """A pattern matches a node by exact op type, exact name, ``@kind`` (``@depthwise``: a grouped Conv with one
    input channel per group; ``@depthwise-input``: a Relu / Clip read only by depthwise Convs), or a regular
    expression over the whole name."""
    if pattern.startswith("@") and pattern[1:] in NODE_KINDS:
        return pattern[1:] in kinds
    if pattern == op_type or pattern == name:
        return True
    try:
        return re.fullmatch(pattern, name or "") is not None
    except re.error:
        return False


GRANULARITIES = ("tensor", "channel", "channel-scaled")   # what a layer gets; the config may also say "auto"


@dataclass(frozen=True)
class LayerOverride:
    """Bits or weight granularity for the nodes a pattern matches (``None`` field = keep the global value; ``"f"`` =
    full precision)."""

    pattern: str
    weight_bits: int | str | None = None
    act_bits: int | str | None = None
    granularity: str | None = None

    _KEYS = {"wbits": "weight_bits", "abits": "act_bits", "granularity": "granularity"}

    @staticmethod
    def parse(text: str) -> "LayerOverride":
        """Parse ``PATTERN=wbits:4,abits:f,granularity:channel-scaled`` (any key may be omitted)."""
        if "=" not in text:
            raise ConfigError(f"override {text!r} must look like PATTERN=wbits:N,abits:N,granularity:G")
        pattern, _, spec = text.rpartition("=")
        values: dict[str, Any] = {}
        for item in filter(None, (s.strip() for s in spec.split(","))):
            key, _, value = item.partition(":")
            key, value = key.strip().lower(), value.strip()
            if key not in LayerOverride._KEYS or not value:
                raise ConfigError(f"override {text!r}: unknown item {item!r} (use wbits:N, abits:N, granularity:G)")
            if key == "granularity":
                if value not in GRANULARITIES:
                    raise ConfigError(f"override {text!r}: granularity must be one of {', '.join(GRANULARITIES)}")
            else:
                parse_bits(value, f"override {text!r} {key}")
            values[LayerOverride._KEYS[key]] = value
        if not pattern or not values:
            raise ConfigError(f"override {text!r} must name a pattern and at least one of wbits/abits/granularity")
        return LayerOverride(pattern.strip(), **values)


@dataclass(frozen=True)
class QuantConfig:
    """What to quantize and how. ``None`` bits mean full precision."""

    weight_bits: int | None = 4
    act_bits: int | None = 4
    weight_quantizer: str = "wq"
    act_quantizer: str = "auto"           # Lloyd's minimum-MSE levels up to 16, segmented (piecewise uniform)
                                          # above (quant/auto_act.py, docs/decisions.md); "wq": the paper's LogQuant
    weight_mode: str = "symmetric"        # wq-algorithm.md §2.3: "symmetric" (caffe-WQ) or "per_sign" (paper)
    weight_search: str = "exact"          # "exact" prefix-sum scan or "bisect" (code parity)
    act_search: str = "code"              # wq-algorithm.md §3.5: "code" (40-bin margin) or "robust"
    weight_granularity: str = "auto"      # "tensor" (paper), "channel" (one codebook per output channel),
                                          # "channel-scaled" (one shared codebook times a per-channel scale) or
                                          # "auto": channel-scaled depthwise convs, per-tensor elsewhere (measured best,
                                          # docs/decisions.md)
    bias_correction: bool = False         # remove the mean output shift (CorrectBiasPass); measured to hurt, see docs
    codebook_refinement: bool = True      # least-squares codebook values on calibration data (RefineCodebooksPass);
                                          # default since the fp32 target won on Fashion and MNIST (4,4), see docs
    refinement_target: str = "fp32"       # "fp32": min ||W x_fp − Ŵ x_q||² (x_q: partially quantized model's input);
                                          # "same-input": min ||W x − Ŵ x||² (the earlier refinement)
    sequential_calibration: bool = False  # fit on the partially quantized model (SequentialCalibratePass)
    gptq: bool = True                     # with refinement: error-compensated (GPTQ) assignment before the value refit;
                                          # default since it won on every model measured (docs/decisions.md)
    mantissa_width: str = "auto"          # "8": int8 codebook mantissas and uint8 level tables wherever a conv allows
                                          # (≤ 5-bit weights, level input, not depthwise), the operands of the runtime's
                                          # u8×s8 GEMM; "16": the widest mantissas; "auto": 8 where no level merges
                                          # (lowering.py, docs/decisions.md)
    exclude: tuple[str, ...] = ()
    overrides: tuple[LayerOverride, ...] = ()
    max_calib_samples: int | None = None
    verify_samples: int = 16
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight_bits", parse_bits(self.weight_bits, "weight bits"))
        object.__setattr__(self, "act_bits", parse_bits(self.act_bits, "activation bits"))
        choices = {
            "weight_quantizer": WEIGHT_QUANTIZER_NAMES,
            "act_quantizer": ACT_QUANTIZER_NAMES,
            "weight_mode": ("symmetric", "per_sign"),
            "weight_search": ("exact", "bisect"),
            "act_search": ("code", "robust"),
            "weight_granularity": ("auto", *GRANULARITIES),
            "refinement_target": REFINEMENT_TARGETS,
            "mantissa_width": MANTISSA_WIDTHS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name.replace('_', '-')} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.max_calib_samples is not None and self.max_calib_samples < 1:
            raise ConfigError(f"max calibration samples must be ≥ 1, got {self.max_calib_samples}")
        if self.verify_samples < 0:
            raise ConfigError(f"verify samples must be ≥ 0, got {self.verify_samples}")
        object.__setattr__(self, "exclude", tuple(self.exclude))
        object.__setattr__(self, "overrides", tuple(self.overrides))

    def is_excluded(self, name: str, op_type: str, kinds: frozenset[str] = frozenset()) -> bool:
        return any(node_matches(p, name, op_type, kinds) for p in self.exclude)

    def weight_bits_for(self, name: str, op_type: str, kinds: frozenset[str] = frozenset()) -> int | None:
        bits: Any = self.weight_bits
        for ov in self.overrides:
            if ov.weight_bits is not None and node_matches(ov.pattern, name, op_type, kinds):
                bits = parse_bits(ov.weight_bits, f"override {ov.pattern!r} wbits")
        return bits

    def granularity_for(self, name: str, op_type: str, kinds: frozenset[str] = frozenset()) -> str:
        granularity = self.weight_granularity
        if granularity == "auto":   # 9 weights per channel: a per-tensor codebook collapses on small-range channels
            granularity = "channel-scaled" if "depthwise" in kinds else "tensor"
        for ov in self.overrides:
            if ov.granularity is not None and node_matches(ov.pattern, name, op_type, kinds):
                granularity = ov.granularity
        return granularity

    def act_bits_for(self, name: str, op_type: str, kinds: frozenset[str] = frozenset()) -> int | None:
        bits: Any = self.act_bits
        for ov in self.overrides:
            if ov.act_bits is not None and node_matches(ov.pattern, name, op_type, kinds):
                bits = parse_bits(ov.act_bits, f"override {ov.pattern!r} abits")
        return bits

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (stored in the compiled model's metadata)."""
        d = dataclasses.asdict(self)
        d.pop("progress")
        d["overrides"] = [dataclasses.asdict(o) for o in self.overrides]
        d["exclude"] = list(self.exclude)
        return d
