"""open_calibration: every source kind, re-batching, max_samples, re-iteration, and every bad-data error."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnxruntime.quantization import CalibrationDataReader

from tests.model_factory import calib_data, make_model, tiny_cnn
from wqcompile.calib.readers import open_calibration
from wqcompile.errors import CalibrationError


@pytest.fixture(scope="module")
def cnn() -> onnx.ModelProto:
    return tiny_cnn()  # one input "input": float32 [N, 3, 12, 12]


def relu_model(dims, name: str = "x") -> onnx.ModelProto:
    """Relu on one float32 input with the given dims (a str is a dynamic dim)."""
    return make_model([helper.make_node("Relu", [name], ["y"], name="relu")],
                      [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)], [])


def two_input_model() -> onnx.ModelProto:
    """Add of inputs "a" and "b", float32 [N, 4]."""
    vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4])  # noqa: E731
    return make_model([helper.make_node("Add", ["a", "b"], ["y"], name="add")], [vi("a"), vi("b")], [vi("y")], [])


def samples(stream, name: str = "input") -> np.ndarray:
    return np.concatenate([b[name] for b in stream])


def sizes(stream, name: str = "input") -> list[int]:
    return [b[name].shape[0] for b in stream]


class ListReader(CalibrationDataReader):
    """An onnxruntime calibration reader over a list of feeds, with the customary ``rewind``."""

    def __init__(self, feeds):
        self.feeds, self.pos = feeds, 0

    def get_next(self):
        if self.pos >= len(self.feeds):
            return None
        self.pos += 1
        return self.feeds[self.pos - 1]

    def rewind(self):
        self.pos = 0


class OneShotReader(CalibrationDataReader):
    """A reader without ``rewind``: a second pass sees nothing."""

    def __init__(self, feeds):
        self.it = iter(feeds)

    def get_next(self):
        return next(self.it, None)


# --- every source kind -------------------------------------------------------------------------------------------

def test_npz_file_keyed_by_input_name(tmp_path, cnn):
    data = calib_data(10)
    np.savez(tmp_path / "c.npz", **data)
    stream = open_calibration(tmp_path / "c.npz", cnn, batch_size=4)
    assert sizes(stream) == [4, 4, 2]
    np.testing.assert_array_equal(samples(stream), data["input"])
    assert all(b["input"].dtype == np.float32 and b["input"].flags.c_contiguous for b in stream)


def test_npz_path_given_as_str(tmp_path, cnn):
    np.savez(tmp_path / "c.npz", **calib_data(5))
    assert sizes(open_calibration(str(tmp_path / "c.npz"), cnn)) == [5]


def test_directory_of_npz_in_name_order(tmp_path, cnn):
    a, b = calib_data(5, seed=1), calib_data(3, seed=2)
    np.savez(tmp_path / "b.npz", **b)  # written first, read second
    np.savez(tmp_path / "a.npz", **a)
    (tmp_path / "notes.txt").write_text("ignored")
    stream = open_calibration(tmp_path, cnn, batch_size=4)
    assert sizes(stream) == [4, 1, 3]
    np.testing.assert_array_equal(samples(stream), np.concatenate([a["input"], b["input"]]))


def test_directory_of_npy_for_single_input_model(tmp_path, cnn):
    a, b = calib_data(6, seed=1)["input"], calib_data(2, seed=2)["input"]
    np.save(tmp_path / "000.npy", a)
    np.save(tmp_path / "001.npy", b)
    stream = open_calibration(tmp_path, cnn, batch_size=4)
    assert sizes(stream) == [4, 2, 2]
    np.testing.assert_array_equal(samples(stream), np.concatenate([a, b]))


def test_iterable_of_dicts(cnn):
    feeds = [calib_data(3, seed=s) for s in range(4)]
    stream = open_calibration(feeds, cnn, batch_size=2)
    assert sizes(stream) == [2, 1] * 4
    np.testing.assert_array_equal(samples(stream), np.concatenate([f["input"] for f in feeds]))


def test_generator_of_dicts(cnn):
    stream = open_calibration((calib_data(2, seed=s) for s in range(3)), cnn)
    assert sizes(stream) == [2, 2, 2]


def test_dict_of_whole_batches(cnn):
    data = calib_data(70)
    stream = open_calibration(data, cnn)  # default batch size 32
    assert sizes(stream) == [32, 32, 6]
    np.testing.assert_array_equal(samples(stream), data["input"])


def test_two_input_model_dict():
    rng = np.random.default_rng(0)
    data = {"a": rng.standard_normal((5, 4)).astype(np.float32), "b": rng.standard_normal((5, 4)).astype(np.float32)}
    batches = list(open_calibration(data, two_input_model(), batch_size=2))
    assert [sorted(b) for b in batches] == [["a", "b"]] * 3
    np.testing.assert_array_equal(np.concatenate([b["b"] for b in batches]), data["b"])


def test_onnxruntime_calibration_data_reader(cnn):
    feeds = [calib_data(3, seed=s) for s in range(3)]
    reader = ListReader(feeds)
    assert isinstance(reader, CalibrationDataReader)
    stream = open_calibration(reader, cnn, batch_size=2)
    assert sizes(stream) == [2, 1] * 3
    np.testing.assert_array_equal(samples(stream), np.concatenate([f["input"] for f in feeds]))


# --- re-batching, fixed batch dimension, max_samples, re-iteration ---------------------------------------------------

@pytest.mark.parametrize("batch_size", [1, 3, 7, 32, 100])
def test_rebatching_never_exceeds_batch_size_and_keeps_every_sample(cnn, batch_size):
    feeds = [calib_data(n, seed=n) for n in (1, 9, 20)]
    got = sizes(open_calibration(feeds, cnn, batch_size=batch_size))
    assert max(got) <= batch_size and sum(got) == 30


def test_fixed_batch_dimension_is_split_into_batches_of_one():
    model = relu_model([1, 3, 4, 4])
    x = np.random.default_rng(0).standard_normal((5, 3, 4, 4)).astype(np.float32)
    batches = list(open_calibration({"x": x}, model, batch_size=32))
    assert [b["x"].shape for b in batches] == [(1, 3, 4, 4)] * 5
    np.testing.assert_array_equal(samples(batches, "x"), x)


def test_fixed_batch_dimension_one_with_max_samples():
    model = relu_model([1, 3, 4, 4])
    x = np.zeros((5, 3, 4, 4), np.float32)
    assert sizes(open_calibration({"x": x}, model, max_samples=3), "x") == [1, 1, 1]


def test_fixed_batch_dimension_larger_than_one():
    model = relu_model([4, 2])
    batches = list(open_calibration({"x": np.zeros((8, 2), np.float32)}, model, batch_size=3))
    assert [b["x"].shape for b in batches] == [(4, 2), (4, 2)]


def test_fixed_batch_dimension_not_a_multiple_is_an_error():
    with pytest.raises(CalibrationError, match=r"6 samples is not a multiple of the model's fixed batch size 4"):
        list(open_calibration({"x": np.zeros((6, 2), np.float32)}, relu_model([4, 2])))


@pytest.mark.parametrize("max_samples, expected", [(1, [1]), (7, [4, 3]), (8, [4, 4]), (13, [4, 4, 2, 3]), (100, [4, 4, 2, 4, 1])])
def test_max_samples_is_exact(cnn, max_samples, expected):
    feeds = [calib_data(10, seed=1), calib_data(5, seed=2)]
    stream = open_calibration(feeds, cnn, batch_size=4, max_samples=max_samples)
    assert sizes(stream) == expected
    np.testing.assert_array_equal(samples(stream), np.concatenate([f["input"] for f in feeds])[:max_samples])


def test_max_samples_stops_reading_the_source(cnn):
    pulled = []

    def gen():
        for s in range(100):
            pulled.append(s)
            yield calib_data(4, seed=s)

    assert sum(sizes(open_calibration(gen(), cnn, max_samples=6))) == 6
    assert len(pulled) == 2  # nothing is read ahead


def test_reiteration_starts_over(tmp_path, cnn):
    data = calib_data(9)
    np.savez(tmp_path / "c.npz", **data)
    (tmp_path / "d").mkdir()
    np.savez(tmp_path / "d" / "0.npz", **data)
    for source in (tmp_path / "c.npz", tmp_path / "d", data, [data], ListReader([data])):
        stream = open_calibration(source, cnn, batch_size=4, max_samples=7)
        first, second = samples(stream), samples(stream)
        assert first.shape[0] == 7, source
        np.testing.assert_array_equal(first, second)


def test_one_shot_sources_say_so_on_a_second_pass(cnn):
    for source in ((calib_data(2) for _ in range(2)), OneShotReader([calib_data(2)])):
        stream = open_calibration(source, cnn)
        assert sum(sizes(stream)) > 0
        with pytest.raises(CalibrationError, match="empty"):
            list(stream)


# --- errors: each names the input or file -----------------------------------------------------------------------------

def test_missing_input_name(cnn):
    with pytest.raises(CalibrationError) as e:
        list(open_calibration({"image": calib_data(2)["input"]}, cnn))
    assert "missing input(s) ['input']" in str(e.value) and "'image'" in str(e.value)


def test_missing_one_of_two_inputs():
    with pytest.raises(CalibrationError, match=r"missing input\(s\) \['b'\]"):
        list(open_calibration({"a": np.zeros((2, 4), np.float32)}, two_input_model()))


def test_unknown_extra_input_name(cnn):
    feed = {**calib_data(2), "mask": np.zeros((2, 1), np.float32)}
    with pytest.raises(CalibrationError, match=r"unknown name\(s\) \['mask'\]"):
        list(open_calibration(feed, cnn))


def test_inputs_disagree_on_sample_count():
    feed = {"a": np.zeros((2, 4), np.float32), "b": np.zeros((3, 4), np.float32)}
    with pytest.raises(CalibrationError, match=r"disagree on the number of samples"):
        list(open_calibration(feed, two_input_model()))


def test_wrong_rank(cnn):
    with pytest.raises(CalibrationError, match=r"input 'input' has shape \[3, 12, 12\], the model expects rank 4"):
        list(open_calibration({"input": calib_data(1)["input"][0]}, cnn))  # one sample without the batch axis


def test_wrong_fixed_dims(cnn):
    with pytest.raises(CalibrationError, match=r"input 'input' has shape \[2, 3, 10, 12\], the model expects \['\?', 3, 12, 12\]"):
        list(open_calibration({"input": np.zeros((2, 3, 10, 12), np.float32)}, cnn))


def test_wrong_dtype_float64_for_float32(cnn):
    with pytest.raises(CalibrationError, match=r"input 'input' has dtype float64, the model expects float32"):
        list(open_calibration({"input": calib_data(2)["input"].astype(np.float64)}, cnn))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_values(cnn, bad):
    x = calib_data(4)["input"]
    x[2, 1, 3, 4] = bad
    with pytest.raises(CalibrationError, match=r"batch 1: input 'input' contains NaN or Inf"):
        list(open_calibration([calib_data(2), {"input": x}], cnn))


def test_error_from_a_file_names_the_file(tmp_path, cnn):
    np.savez(tmp_path / "0.npz", **calib_data(2))
    np.savez(tmp_path / "1.npz", input=calib_data(2)["input"].astype(np.float64))
    with pytest.raises(CalibrationError, match=r"1\.npz: input 'input' has dtype float64"):
        list(open_calibration(tmp_path, cnn))


def test_empty_directory(tmp_path, cnn):
    (tmp_path / "calib").mkdir()
    with pytest.raises(CalibrationError, match=r"calib: directory holds no \.npz or \.npy calibration files"):
        list(open_calibration(tmp_path / "calib", cnn))


@pytest.mark.parametrize("source", [[], (), iter([])], ids=["list", "tuple", "iterator"])
def test_empty_iterable(cnn, source):
    with pytest.raises(CalibrationError, match="calibration data is empty"):
        list(open_calibration(source, cnn))


def test_npz_with_zero_samples(tmp_path, cnn):
    np.savez(tmp_path / "zero.npz", input=np.zeros((0, 3, 12, 12), np.float32))
    with pytest.raises(CalibrationError, match=r"zero\.npz: calibration data is empty"):
        list(open_calibration(tmp_path / "zero.npz", cnn))


def test_none_source(cnn):
    with pytest.raises(CalibrationError, match="no calibration data given"):
        open_calibration(None, cnn)


def test_missing_path(tmp_path, cnn):
    with pytest.raises(CalibrationError, match=r"nope\.npz: calibration data not found"):
        list(open_calibration(tmp_path / "nope.npz", cnn))


@pytest.mark.parametrize("content", [b"", b"this is not a zip archive\n", b"PK\x03\x04" + bytes(40)], ids=["empty", "text", "bad-zip"])
def test_unreadable_npz_file(tmp_path, cnn, content):
    (tmp_path / "broken.npz").write_bytes(content)
    with pytest.raises(CalibrationError, match=r"broken\.npz: not a readable \.npz file"):
        list(open_calibration(tmp_path / "broken.npz", cnn))


def test_unreadable_file_inside_a_directory(tmp_path, cnn):
    np.savez(tmp_path / "a.npz", **calib_data(2))
    (tmp_path / "b.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(CalibrationError, match=r"b\.npy: not a readable \.npy file"):
        list(open_calibration(tmp_path, cnn))


def test_single_npy_file_is_refused(tmp_path, cnn):
    np.save(tmp_path / "x.npy", calib_data(2)["input"])
    with pytest.raises(CalibrationError, match=r"x\.npy: a \.npy file holds one array"):
        list(open_calibration(tmp_path / "x.npy", cnn))


def test_npy_directory_with_a_multi_input_model(tmp_path):
    np.save(tmp_path / "0.npy", np.zeros((2, 4), np.float32))
    with pytest.raises(CalibrationError, match=r"0\.npy: \.npy files only work for single-input models.*'a', 'b'"):
        list(open_calibration(tmp_path, two_input_model()))


def test_iterable_of_non_dicts(cnn):
    with pytest.raises(CalibrationError, match="yielded a ndarray"):
        list(open_calibration(calib_data(2)["input"], cnn))


def test_unsupported_source_type(cnn):
    with pytest.raises(CalibrationError, match="cannot read calibration data from a int"):
        list(open_calibration(42, cnn))


def test_bad_feed_after_max_samples_is_never_read(cnn):
    bad = {"input": np.full((2, 3, 12, 12), np.nan, np.float32)}
    assert sum(sizes(open_calibration([calib_data(4), bad], cnn, max_samples=4))) == 4
