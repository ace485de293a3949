"""WQ OptSearch against wq-algorithm.md §2.6, §2.7 and §7 (test vectors 1, 2 and 5)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from tests.quant.listed import assert_listed
from tests.quant.spec_vectors import WORKED_W, normal_quantile_weights, normal_quantile_weights_with_ties
from wqcompile.quant import fit_weighted_entropy, optsearch

H8 = 4  # magnitude clusters for L = 8


def _trace(res, pass_, k):
    (entry,) = [t for t in res.trace if t["pass"] == pass_ and t["k"] == k]
    return entry


# ---------------------------------------------------------------- §2.7, L = 8


def test_worked_example_initial_state():
    res = optsearch(np.abs(WORKED_W), H8, max_passes=0)
    assert res.slices.tolist() == [2, 4, 6, 8]
    assert_listed(res.S, "0.684266")


def test_worked_example_pass0_candidates():
    res = optsearch(np.abs(WORKED_W), H8, trace=True)
    expected = {
        0: ([1, 2, 3], ["0.030161", "0.037040", "0.042177"]),
        1: ([4, 5], ["0.137763", "0.151626"]),
        2: ([6, 7], ["0.627298", "0.730404"]),
    }
    for k, (js, values) in expected.items():
        entry = _trace(res, 0, k)
        assert entry["j"].tolist() == js
        assert_listed(entry["f"], values)


def test_worked_example_after_pass0():
    res = optsearch(np.abs(WORKED_W), H8, max_passes=1)
    assert res.slices.tolist() == [3, 5, 7, 8]
    assert_listed(res.S, "0.806372")


def test_worked_example_pass1():
    res = optsearch(np.abs(WORKED_W), H8, trace=True)
    k0 = _trace(res, 1, 0)
    assert k0["j"].tolist() == [1, 2, 3, 4]
    assert int(np.argmax(k0["f"])) == 3  # j = 4
    assert_listed(k0["f"][3], "0.080145")
    k1 = _trace(res, 1, 1)
    assert k1["j"].tolist() == [5, 6]
    assert_listed(k1["f"], ["0.286790", "0.328378"])
    # k = 2 has the single admissible j = 7 and is skipped.
    assert not [t for t in res.trace if t["pass"] == 1 and t["k"] == 2]


@pytest.mark.parametrize("search", ["exact", "bisect"])
def test_worked_example_final(search):
    cb = fit_weighted_entropy(WORKED_W, 8, search=search)
    info = cb.info
    assert info["slices"].tolist() == [4, 6, 7, 8]
    assert info["passes"] == 3  # passes 0 and 1 improve, pass 2 changes nothing
    assert_listed(info["S"], "0.852138")
    assert_listed(info["r"], ["0.188746", "0.452769", "0.8", "1.2"])
    assert info["b"].tolist() == [0.0, 0.4, 0.8, 1.2]  # read directly from the sorted magnitudes
    assert_listed(
        cb.dequantize(),
        ["0.188746", "-0.188746", "0.188746", "-0.188746", "0.452769", "-0.452769", "0.8", "-1.2"],
    )
    r = info["r"]
    assert cb.values.tolist() == [-r[3], -r[2], -r[1], -r[0], r[0], r[1], r[2], r[3]]


def test_worked_example_cluster_terms():
    info = fit_weighted_entropy(WORKED_W, 8).info
    n = np.diff(np.concatenate(([0], info["slices"])))
    T = info["r"] ** 2 * n
    assert_listed(n / 8, ["0.5", "0.25", "0.125", "0.125"])
    assert_listed(T, ["0.1425", "0.41", "0.64", "1.44"])
    terms = -(T / 8) * np.log(n / 8 / 2)
    assert_listed(terms, ["0.024693", "0.106571", "0.221807", "0.499066"])
    assert math.isclose(terms.sum(), info["S"], rel_tol=1e-12)  # float64 summation order only
    paper_form = info["S"] - np.sum(WORKED_W**2) / 8 * math.log(2)
    assert_listed(paper_form, "0.624049")


# ---------------------------------------------------------------- §2.7, L = 3 and L = 4


def test_worked_example_ternary():
    res = optsearch(np.abs(WORKED_W), 2, zero_cluster=True, trace=True)
    (scan,) = res.trace
    assert scan["j"].tolist() == list(range(1, 8))
    assert_listed(scan["f"], ["0.27177", "0.32122", "0.37512", "0.43148", "0.48755", "0.54065", "0.49907"])
    cb = fit_weighted_entropy(WORKED_W, 3)
    assert cb.info["slices"].tolist() == [6, 8]
    assert cb.info["b"].tolist() == [0.0, 0.8]
    assert_listed(cb.info["r"], ["0", "1.019804"])
    assert cb.info["r"][0] == 0.0
    assert_listed(cb.dequantize(), ["0"] * 6 + ["1.019804", "-1.019804"])
    assert cb.values[1] == 0.0 and cb.values[0] == -cb.values[2]


def test_worked_example_l4():
    res = optsearch(np.abs(WORKED_W), 2, trace=True)
    assert_listed(res.trace[0]["f"], ["0.2726", "0.3245", "0.3861", "0.4562", "0.5315", "0.6084", "0.6223"])
    cb = fit_weighted_entropy(WORKED_W, 4)
    assert cb.info["slices"].tolist() == [7, 8]
    assert_listed(cb.info["r"], ["0.412743", "1.2"])
    q = cb.dequantize()
    assert np.count_nonzero(np.abs(q) == 1.2) == 1  # only −1.2 keeps its own level


def test_worked_example_per_sign_l4():
    cb = fit_weighted_entropy(WORKED_W, 4, mode="per_sign")
    assert_listed(cb.values, ["-1.2", "-0.341565", "0.259808", "0.8"])
    assert cb.info["positive"]["slices"].tolist() == [3, 4]  # {.05,.2,.4} and {.8}
    assert cb.info["negative"]["slices"].tolist() == [3, 4]  # {.1,.3,.5} and {1.2}
    expected = ["0.259808", "-0.341565"] * 3 + ["0.8", "-1.2"]
    assert_listed(cb.dequantize(), expected)


# ---------------------------------------------------------------- §7.2 normal quantiles

NORMAL_VECTORS = {
    2: {"slices": [1000], "r": ["0.019987"]},
    3: {"slices": [762, 1000], "r": ["0", "0.034447"], "b": ["0", "0.02365"]},
    4: {"slices": [832, 1000], "r": ["0.013984", "0.037543"], "b": ["0", "0.027638"], "S": "7.292020e-4"},
    5: {"slices": [618, 902, 1000], "r": ["0", "0.024442", "0.042018"]},
    8: {
        "slices": [663, 854, 952, 1000],
        "r": ["0.010416", "0.023822", "0.033674", "0.047439"],
        "b": ["0", "0.019202", "0.029148", "0.039726"],
        "S": "1.072048e-3",
    },
    16: {
        "slices": [528, 695, 794, 863, 914, 953, 982, 1000],
        "r": ["0.008021", "0.017404", "0.022837", "0.027434", "0.031925", "0.036844", "0.043055", "0.054102"],
    },
}


@pytest.fixture(scope="module")
def normal_w():
    return normal_quantile_weights()


@pytest.mark.parametrize("search", ["exact", "bisect"])
@pytest.mark.parametrize("L", sorted(NORMAL_VECTORS))
def test_normal_quantile_vectors(normal_w, L, search):
    expected = NORMAL_VECTORS[L]
    info = fit_weighted_entropy(normal_w, L, search=search).info
    assert info["slices"].tolist() == expected["slices"]
    assert_listed(info["r"], expected["r"])
    if L % 2:
        assert info["r"][0] == 0.0
    assert info["b"][0] == 0.0
    if "b" in expected:
        assert_listed(info["b"], expected["b"])
    if "S" in expected:
        assert_listed(info["S"], expected["S"])


def test_normal_quantiles_exact_ties_stay_together():
    # With NormalDist's exact ±w ties, boundaries may only fall between distinct magnitudes, so every
    # slice is even (each |w| occurs twice or is a lone untied value pair member).
    w = normal_quantile_weights_with_ties()
    m = np.sort(np.abs(w))
    for L in (4, 8, 16):
        slices = fit_weighted_entropy(w, L).info["slices"]
        inner = slices[slices < m.size]
        assert np.all(m[inner - 1] < m[inner]), (L, slices)


def test_bisect_can_miss_with_zero_cluster():
    """§2.3 reports identical exact/bisect results; with a zero cluster they can differ.

    The zero-cluster boundary has only φ(j, c_1) as local objective; on this sample it has two local
    maxima (j = 204 and 207) and the code's slope bisection settles on the lower one. The exact scan
    finds the global maximum of that coordinate.
    """
    w = np.random.default_rng(223605).standard_normal(266)
    exact = fit_weighted_entropy(w, 3, search="exact").info
    bisect = fit_weighted_entropy(w, 3, search="bisect").info
    assert exact["slices"].tolist() == [207, 266] and bisect["slices"].tolist() == [204, 266]
    assert exact["S"] > bisect["S"]


# ---------------------------------------------------------------- edge cases (§2.6, §7.5)


@pytest.mark.parametrize("mode", ["symmetric", "per_sign"])
@pytest.mark.parametrize("L", [2, 3, 8])
def test_all_zero_weights(caplog, mode, L):
    w = np.zeros((3, 4))
    w[0, 0] = -0.0
    with caplog.at_level(logging.WARNING):
        cb = fit_weighted_entropy(w, L, mode=mode, name="conv1.weight")
    assert "conv1.weight" in caplog.text and "zero" in caplog.text
    assert cb.levels == L and np.all(cb.values == 0.0)
    assert np.array_equal(cb.dequantize(), np.zeros((3, 4)))
    assert cb.info["S"] == 0.0 and cb.info.get("passes", 0) == 0


@pytest.mark.parametrize("value", [0.37, -0.37])
def test_single_weight_l8_is_exact(value):
    cb = fit_weighted_entropy(np.array([value]), 8)
    assert cb.dequantize().tolist() == [value]
    assert cb.levels == 8 and cb.info["passes"] == 0
    assert cb.info["unused_levels"] == 6
    assert np.all(np.diff(cb.values) >= 0) and np.array_equal(cb.values, -cb.values[::-1])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_raise(bad):
    with pytest.raises(ValueError, match=r"fc6\.weight.*NaN/Inf"):
        fit_weighted_entropy(np.array([0.1, bad, -0.2]), 4, name="fc6.weight")


def test_few_distinct_magnitudes_are_lossless():
    w = np.array([0.1, -0.1, 0.3, 0.3, -0.7, 0.1])  # M = 3 <= H = 4
    cb = fit_weighted_entropy(w, 8)
    assert np.array_equal(cb.dequantize(), w)
    assert cb.info["passes"] == 0 and cb.info["unused_levels"] == 2


@pytest.mark.parametrize(
    "w",
    [np.array([0.0, 0.5, -1.0, 0.5]), np.array([0.5, -1.0, 1.0])],  # with and without exact zeros
)
def test_few_distinct_magnitudes_odd_l_lossless(w):
    cb = fit_weighted_entropy(w, 5)  # H = 3: zero cluster + 2 non-zero clusters
    assert np.array_equal(cb.dequantize(), w)
    assert cb.values[2] == 0.0


def test_zero_and_negative_zero_map_to_plus_r0_for_even_l():
    w = np.array([0.0, -0.0, 0.01, -0.02, 0.5, -0.6, 0.7, 0.9, -1.1, 1.3])
    cb = fit_weighted_entropy(w, 4)
    r0 = cb.info["r"][0]
    q = cb.dequantize()
    assert q[0] == r0 and q[1] == r0 and r0 > 0
    cb3 = fit_weighted_entropy(w, 3)
    assert cb3.dequantize()[0] == 0.0 and cb3.dequantize()[1] == 0.0


def test_ties_are_never_split():
    rng = np.random.default_rng(3)
    w = rng.integers(-20, 21, size=5000) * 0.01  # 21 distinct magnitudes, many ties
    for L in (4, 8, 16, 5):
        cb = fit_weighted_entropy(w, L)
        q = np.abs(cb.dequantize())
        for m in np.unique(np.abs(w)):
            assert np.unique(q[np.abs(w) == m]).size == 1


def test_threshold_assignment_matches_rule():
    rng = np.random.default_rng(4)
    w = rng.standard_normal(3000)
    for L in (3, 4, 8, 9):
        cb = fit_weighted_entropy(w, L)
        r, b = cb.info["r"], cb.info["b"]
        k = np.searchsorted(b, np.abs(w), side="right") - 1  # largest k with |w| >= b_k
        sign = np.where(w >= 0, 1.0, -1.0)
        assert np.array_equal(cb.dequantize(), sign * r[k])


def test_degenerate_candidate_ranges_terminate():
    # M = H + 1: every boundary has at most two admissible positions; several have one.
    w = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    cb = fit_weighted_entropy(w, 16)
    assert cb.info["slices"].tolist()[-1] == 9
    assert np.all(np.diff(cb.info["slices"]) > 0)


def test_returned_s_matches_slices():
    rng = np.random.default_rng(5)
    w = rng.laplace(size=4000)
    for L, z in ((8, 0), (7, 1)):
        info = fit_weighted_entropy(w, L).info
        m2 = np.sort(w * w)
        ends = info["slices"]
        starts = np.concatenate(([0], ends[:-1]))
        terms = [-(m2[a:e].sum() / w.size) * math.log((e - a) / (2 * w.size)) for a, e in zip(starts, ends)]
        assert math.isclose(sum(terms[z:]), info["S"], rel_tol=1e-12)  # summation order only


def test_max_passes_caps_the_search(caplog):
    w = np.random.default_rng(6).standard_normal(5000)
    with caplog.at_level(logging.WARNING):
        info = fit_weighted_entropy(w, 16, max_passes=2).info
    assert info["passes"] == 2 and "max_passes" in caplog.text


def test_negative_only_weights():
    w = -np.abs(np.random.default_rng(7).standard_normal(500)) - 0.01
    sym = fit_weighted_entropy(w, 4)
    assert np.all(sym.dequantize() < 0)
    cb = fit_weighted_entropy(w, 4, mode="per_sign")
    assert cb.info["empty_sign"] == "positive" and cb.info["unused_levels"] == 0
    assert np.unique(cb.dequantize()).size == 4 and np.all(cb.values < 0)
    kept = fit_weighted_entropy(w, 4, mode="per_sign", reassign_empty_sign=False)
    assert kept.info["unused_levels"] == 2
    assert np.unique(kept.dequantize()).size == 2
    assert np.all(np.diff(kept.values) >= 0)


def test_per_sign_odd_l_has_shared_zero_level():
    w = np.random.default_rng(8).standard_normal(2000)
    cb = fit_weighted_entropy(w, 5, mode="per_sign")
    assert cb.values[2] == 0.0 and np.all(cb.values[:2] < 0) and np.all(cb.values[3:] > 0)
    for g in ("positive", "negative"):
        assert cb.info[g]["r"][0] == 0.0 and cb.info[g]["slices"].size == 3


def test_per_sign_zero_goes_to_lowest_positive_cluster():
    w = np.array([0.0, 0.1, 0.2, 0.9, 1.0, -0.3, -0.5])
    cb = fit_weighted_entropy(w, 4, mode="per_sign")
    assert cb.dequantize()[0] == cb.info["positive"]["r"][0] > 0


@pytest.mark.parametrize("levels", [0, 1, 257, 2.5, True])
def test_invalid_levels(levels):
    with pytest.raises(ValueError, match="levels"):
        fit_weighted_entropy(np.ones(4), levels)


def test_invalid_mode_and_search():
    with pytest.raises(ValueError, match="mode"):
        fit_weighted_entropy(np.ones(4), 4, mode="both")
    with pytest.raises(ValueError, match="search"):
        fit_weighted_entropy(np.arange(10.0), 4, search="golden")


def test_indices_dtype_and_shape():
    w = np.random.default_rng(9).standard_normal((8, 3, 3, 3)).astype(np.float32)
    cb = fit_weighted_entropy(w, 16)
    assert cb.indices.shape == w.shape and cb.indices.dtype == np.uint8
    assert cb.dequantize().dtype == np.float64
