"""Pure-numpy quantization algorithms (no onnx imports).

Weight fitters take ``(w, levels, **options)`` and return a :class:`WeightCodebook`; activation fitters
take ``(hist, levels, **options)`` with a :class:`LogHistogram` and return an :class:`ActQuantizer`.
Options a fitter does not know are ignored by the baselines. The two tables below are the complete,
explicit registries (no import-time registration).
"""

from .act_quantizer import ActQuantizer
from .auto_act import fit_auto_act
from .codebook import WeightCodebook
from .kmeans_weights import fit_kmeans_weights
from .linear_act import fit_linear_act
from .linear_weights import fit_linear_weights
from .log_histogram import LogHistogram
from .log_weights import fit_log_weights
from .lloyd_act import fit_lloyd_act
from .logquant_mse import fit_logquant_mse
from .metrics import sqnr_db
from .miyashita_logquant import fit_miyashita_logquant
from .segmented_act import fit_segmented_act
from .weighted_entropy import OptSearchResult, fit_weighted_entropy, optsearch
from .wq_logquant import fit_wq_logquant

WEIGHT_QUANTIZERS = {
    "wq": fit_weighted_entropy,
    "linear": fit_linear_weights,
    "log": fit_log_weights,
    "kmeans": fit_kmeans_weights,
}

ACT_QUANTIZERS = {
    "wq": fit_wq_logquant,
    "linear": fit_linear_act,
    "miyashita": fit_miyashita_logquant,
    "logmse": fit_logquant_mse,
    "lloyd": fit_lloyd_act,
    "segmented": fit_segmented_act,
    "auto": fit_auto_act,
}

__all__ = [
    "ACT_QUANTIZERS",
    "ActQuantizer",
    "LogHistogram",
    "OptSearchResult",
    "WEIGHT_QUANTIZERS",
    "WeightCodebook",
    "fit_auto_act",
    "fit_kmeans_weights",
    "fit_linear_act",
    "fit_linear_weights",
    "fit_lloyd_act",
    "fit_log_weights",
    "fit_logquant_mse",
    "fit_miyashita_logquant",
    "fit_segmented_act",
    "fit_weighted_entropy",
    "fit_wq_logquant",
    "optsearch",
    "sqnr_db",
]
