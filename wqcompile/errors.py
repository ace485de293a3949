"""One exception hierarchy for wqcompile.

Every error a user can cause derives from :class:`WQError`; the CLI turns it into one line on stderr and a non-zero
exit code, never a traceback. Messages name the file, node or tensor involved and say what was wrong.
"""


class WQError(Exception):
    """Base class of every error wqcompile raises on purpose."""


class ModelLoadError(WQError):
    """The model file is missing, not ONNX, truncated, or fails ``onnx.checker``."""


class UnsupportedModelError(WQError):
    """The model is valid ONNX but uses something wqcompile cannot compile (e.g. an opset it does not know)."""


class CalibrationError(WQError):
    """Calibration data is missing, empty, or does not match the model's inputs."""


class ConfigError(WQError):
    """A configuration value (bits, quantizer name, override pattern, paths) is invalid."""


class QuantizationError(WQError):
    """A layer cannot be quantized (NaN/Inf weights, accumulator bound cannot hold, ...)."""


class PassError(WQError):
    """A pass failed; the message names the pass and the passes already run."""


class PreconditionError(PassError):
    """A pass was run before the analysis it needs (e.g. a rewrite before fitting)."""


class PostconditionError(PassError):
    """A pass left the graph or context in a state it promised not to."""


class OutputError(WQError):
    """The output path is unusable (same as the input, unwritable directory, ...)."""
