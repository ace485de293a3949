"""The ``wqcompile`` command line: compile, inspect, run. Thin: parsing and printing only.

Flag names are a public contract; each maps to one field of :class:`~wqcompile.config.QuantConfig`.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click
import numpy as np

from wqcompile.config import (
    ACT_QUANTIZER_NAMES, GRANULARITIES, MANTISSA_WIDTHS, REFINEMENT_TARGETS, WEIGHT_QUANTIZER_NAMES, LayerOverride, QuantConfig,
)
from wqcompile.errors import WQError


def _run_safely(debug: bool, fn, *args, _where: object = "I/O", **kwargs):
    """Turn every WQError (and OSError) into one line and exit code 1 (a traceback only with --debug)."""
    try:
        return fn(*args, **kwargs)
    except WQError as err:
        if debug:
            raise
        raise click.ClickException(str(err)) from None
    except OSError as err:  # e.g. a full disk or a permission change mid-run: still one line naming the file
        if debug:
            raise
        raise click.ClickException(f"{err.filename or _where}: {err.strerror or err}") from None
    except KeyboardInterrupt:
        raise click.ClickException("interrupted; no output was written") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="wqcompile")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """wqcompile: weighted-entropy post-training quantization of ONNX models."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@main.command("compile")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Compiled model path.")
@click.option("--calib", type=click.Path(path_type=Path), required=True,
              help="Calibration data: a .npz keyed by input name (batched on axis 0) or a directory of .npz/.npy.")
@click.option("--wbits", default="4", show_default=True, help="Weight bits 1..8, or 'f' for full precision.")
@click.option("--abits", default="4", show_default=True, help="Activation bits 1..8, or 'f' for full precision.")
@click.option("--weight-quantizer", type=click.Choice(WEIGHT_QUANTIZER_NAMES), default="wq", show_default=True)
@click.option("--act-quantizer", type=click.Choice(ACT_QUANTIZER_NAMES), default=QuantConfig.act_quantizer,
              show_default=True, help="Activation levels: auto (default: lloyd up to 4 bits, segmented above), lloyd (minimum "
                   "MSE), segmented (runs of even spacing: no lookup at run time), wq (the paper's LogQuant), ...")
@click.option("--weight-mode", type=click.Choice(["symmetric", "per_sign"]), default="symmetric", show_default=True)
@click.option("--weight-search", type=click.Choice(["exact", "bisect"]), default="exact", show_default=True)
@click.option("--act-search", type=click.Choice(["code", "robust"]), default="code", show_default=True)
@click.option("--weight-granularity", type=click.Choice(["auto", *GRANULARITIES]), default="auto", show_default=True,
              help="Codebooks per tensor (the paper), per output channel, or one shared codebook times an int32 scale "
                   "per channel (channel-scaled); auto = channel-scaled depthwise convs, per-tensor elsewhere.")
@click.option("--mantissa-width", type=click.Choice(list(MANTISSA_WIDTHS)), default=QuantConfig.mantissa_width,
              show_default=True,
              help="8: int8 codebook and uint8 level mantissas for convs with ≤ 5-bit weights and level inputs (the "
                   "runtime's twice-as-fast u8×s8 GEMM); 16: the widest mantissas; auto: 8 wherever no level merges.")
@click.option("--bias-correction/--no-bias-correction", default=False, show_default=True,
              help="Remove the mean output shift quantization causes, measured on the calibration data.")
@click.option("--codebook-refinement/--no-codebook-refinement", default=QuantConfig.codebook_refinement, show_default=True,
              help="Refit codebook values (assignment kept) to the layer's output on the calibration data.")
@click.option("--refinement-target", type=click.Choice(list(REFINEMENT_TARGETS)),
              default=QuantConfig.refinement_target, show_default=True,
              help="Codebook refinement target: 'same-input' fits W x with Ŵ x; 'fp32' fits the FP32 model's W x_fp "
                   "with Ŵ x_q on the partially quantized model's input (compensates earlier layers' error).")
@click.option("--sequential-calibration/--no-sequential-calibration", default=QuantConfig.sequential_calibration,
              show_default=True, help="Fit each layer on the outputs of the already-quantized layers before it.")
@click.option("--gptq/--no-gptq", default=QuantConfig.gptq, show_default=True,
              help="With refinement: reassign weights to codebook entries by GPTQ's error feedback before the refit.")
@click.option("--exclude", multiple=True, metavar="PATTERN", help="Leave nodes in FP32: node name, op type, @depthwise, @depthwise-input (a Relu/Clip read only by depthwise convs), or regex over names. Repeatable.")
@click.option("--override", multiple=True, metavar="PATTERN=wbits:N,abits:N,granularity:G", help="Per-layer bits or weight granularity (later wins); PATTERN as for --exclude, e.g. '@depthwise=wbits:8', '@depthwise=granularity:channel-scaled' or '@depthwise-input=abits:8'. Repeatable.")
@click.option("--max-calib-samples", type=int, default=None, help="Use at most this many calibration samples.")
@click.option("--verify-samples", type=int, default=16, show_default=True, help="Calibration samples used to compare with FP32.")
@click.option("--seed", type=int, default=0, show_default=True, help="Recorded in the metadata; seeds numpy for user passes.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Write report.json, report.md and a weight histogram PNG here.")
@click.option("--plot-layer", default=None, help="Layer drawn in the weight histogram (default: the largest).")
@click.option("--dump-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Save the graph after every pass.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def compile_cmd(model, output, calib, wbits, abits, weight_quantizer, act_quantizer, weight_mode, weight_search,
                act_search, weight_granularity, mantissa_width, bias_correction, codebook_refinement, refinement_target, sequential_calibration, gptq, exclude, override, max_calib_samples, verify_samples, seed,
                report_dir, plot_layer, dump_dir, progress, debug):
    """Compile MODEL with calibration data into a quantized model."""
    from wqcompile.api import compile_file

    def build():
        np.random.seed(seed)
        return QuantConfig(
            weight_bits=wbits, act_bits=abits, weight_quantizer=weight_quantizer, act_quantizer=act_quantizer,
            weight_mode=weight_mode, weight_search=weight_search, act_search=act_search,
            weight_granularity=weight_granularity, mantissa_width=mantissa_width, bias_correction=bias_correction,
            codebook_refinement=codebook_refinement, refinement_target=refinement_target,
            sequential_calibration=sequential_calibration, gptq=gptq, exclude=tuple(exclude),
            overrides=tuple(LayerOverride.parse(o) for o in override), max_calib_samples=max_calib_samples,
            verify_samples=verify_samples, seed=seed, progress=progress)

    config = _run_safely(debug, build)
    result = _run_safely(debug, compile_file, model, output, calib, config, report_dir=report_dir,
                         plot_layer=plot_layer, dump_dir=dump_dir, _where=output)
    s, v = result.report["summary"], result.context.verify
    click.echo(f"compiled {model} -> {output}")
    click.echo(f"  layers: {s['weight_layers']} weight, {s['activation_layers']} activation; "
               f"{len(result.context.skipped)} left untouched")
    ratio = s["size_ratio"]
    change = f"{ratio:.2f}x smaller" if ratio >= 1 else f"{1 / ratio:.2f}x larger"
    click.echo(f"  size: {s['fp32_file_bytes']:,} B -> {s['compiled_file_bytes']:,} B ({change})")
    if v.get("samples"):
        agree = f", top-1 agreement {v['top1_agreement']:.1%}" if "top1_agreement" in v else ""
        click.echo(f"  vs FP32 on {v['samples']} calibration samples: output SQNR {v['output_sqnr_db']:.1f} dB{agree}")
    click.echo(f"  compile time: {s['compile_seconds']:.1f} s on {s['calibration_samples']} calibration samples")
    for warning in result.context.warnings:
        click.echo(f"  warning: {warning}", err=True)
    if report_dir is not None:
        click.echo(f"  report: {report_dir / 'report.md'} (and report.json, weight_histogram.png)")


@main.command("inspect")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--debug", is_flag=True)
def inspect_cmd(model, as_json, debug):
    """Per-layer summary of a compiled MODEL."""
    from wqcompile.inspect import inspect_model

    info = _run_safely(debug, inspect_model, model, _where=model)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"{model}: wqcompile {info['tool_version'] or '(not compiled by wqcompile)'}, {info['file_bytes']:,} bytes")
    if info["config"]:
        cfg = info["config"]
        click.echo(f"  config: wbits={cfg.get('weight_bits')} abits={cfg.get('act_bits')} "
                   f"weights={cfg.get('weight_quantizer')} activations={cfg.get('act_quantizer')}")
    click.echo(f"  {'node':<32} {'op':<8} {'w bits':>6} {'weights':>9} {'packed B':>9} {'input':>7} {'output':>10}")
    for row in info["layers"]:
        click.echo(f"  {row['node'][:32]:<32} {row['op']:<8} {str(row.get('w_bits', '-')):>6} {str(row.get('weights', '-')):>9} "
                   f"{str(row.get('packed_bytes', '-')):>9} {row.get('input', '-'):>7} {row.get('output', '-'):>10}")
    click.echo(f"  other ops: {info['other_ops']}")


@main.command("run")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--inputs", "inputs_path", type=click.Path(dir_okay=False, path_type=Path), required=True, help=".npz keyed by input name.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help=".npz of the outputs.")
@click.option("--debug", is_flag=True)
def run_cmd(model, inputs_path, output, debug):
    """Run a compiled MODEL through the numpy reference."""
    from wqcompile.run import run_model_file

    names = _run_safely(debug, run_model_file, model, inputs_path, output, _where=output)
    click.echo(f"wrote {', '.join(names)} to {output}")


@main.command("bench")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--calib", type=click.Path(path_type=Path), default=None,
              help="Calibration data (as for compile); default: random normal inputs.")
@click.option("--compiled", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="An already compiled model (skips compiling MODEL).")
@click.option("--wbits", default="4", show_default=True, help="Weight bits when compiling.")
@click.option("--abits", default="4", show_default=True, help="Activation bits when compiling.")
@click.option("--batch", "batches", type=int, multiple=True, help="Batch size (repeatable; default 1 and 32).")
@click.option("--threads", "threads", type=int, multiple=True, help="intra_op_num_threads (repeatable; default 1 and 2).")
@click.option("--repeats", type=int, default=20, show_default=True, help="Interleaved timing rounds.")
@click.option("--warmup", type=int, default=3, show_default=True, help="Untimed runs per session first.")
@click.option("--no-int8", is_flag=True, help="Skip onnxruntime's INT8 QDQ baseline.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the numbers here.")
@click.option("--profile", "profile_runs", type=click.IntRange(min=0), default=0, show_default=True,
              help="Then profile both models node by node over this many runs per cell (onnxruntime's profiler): "
                   "kernel time per op type side by side and the compiled model's slowest nodes.")
@click.option("--debug", is_flag=True)
def bench_cmd(model, calib, compiled, wbits, abits, batches, threads, repeats, warmup, no_int8, json_out,
              profile_runs, debug):
    """Time FP32 vs compiled (onnxruntime + libwq_ops) vs onnxruntime INT8 QDQ on MODEL, interleaved."""
    from wqcompile.bench import run_bench

    _run_safely(debug, run_bench, model, calib=calib, wbits=wbits, abits=abits, compiled_path=compiled,
                batches=batches or (1, 32), threads=threads or (1, 2), repeats=repeats, warmup=warmup,
                int8=not no_int8, json_out=json_out, profile_runs=profile_runs, echo=click.echo)


if __name__ == "__main__":  # pragma: no cover
    main()
