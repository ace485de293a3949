"""``wqcompile run``: feed an .npz to a compiled model through the numpy reference and save the outputs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from wqcompile.errors import CalibrationError
from wqcompile.model_io import check_output_path, load_model, write_bytes_atomic


def run_model_file(model_path: str | Path, inputs_path: str | Path, output_path: str | Path) -> list[str]:
    from wqcompile.calib.readers import InputSpec, read_npz, validate_feed
    from wqcompile.reference import ReferenceSession

    output = check_output_path(output_path, model_path, inputs_path)
    model = load_model(model_path)
    if not Path(inputs_path).is_file():
        raise CalibrationError(f"{inputs_path}: no such inputs file")
    feed = validate_feed(read_npz(Path(inputs_path)), InputSpec.from_model(model), str(inputs_path))
    session = ReferenceSession(model)
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, feed)
    buf = io.BytesIO()
    np.savez(buf, **dict(zip(names, values)))
    write_bytes_atomic(output, buf.getvalue())
    return names
