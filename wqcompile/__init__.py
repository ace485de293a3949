"""wqcompile: an ONNX post-training quantization compiler.

Weighted-entropy weight codebooks (Park et al., CVPR 2017) and LogQuant activations, rewritten into the shift-based
custom ops of the ``ai.wqcompile`` domain. Public entry points:

* :func:`wqcompile.api.compile_model` / :func:`wqcompile.api.compile_file`: the default pipeline on a model;
* :mod:`wqcompile.passes`: the passes and ``default_pipeline()``; :class:`wqcompile.pass_manager.PassManager`;
* :class:`wqcompile.reference.ReferenceSession`: run a compiled model with the numpy reference kernels.
"""

__version__ = "0.1.0"
