// The hot loops of the integer contract, one implementation per instruction set, chosen at run time.
//
// Why an integer multiply of pre-decoded mantissas (and not a shift per multiply-accumulate):
// the contract's product is C[g, idx] · X, a codebook mantissa times a level mantissa. A level mantissa is
// x_table[n] = rint(2^((fsr + (n-1)·step)/16 + x_shift)): a power of two times one of at most 16 fractional
// factors, so the product *could* be formed as (C · frac[r]) << e with a 16-entry table and a variable shift.
// On x86 that is strictly slower: a variable shift (vpsllvd) costs as much as a multiply, needs the per-element
// exponent and fraction split out first, and still needs a multiply or a table lookup for the fractional factor,
// whereas vpdpwssd (AVX-512 VNNI) does 32 int16×int16 multiplies *and* their int32 accumulation in one
// instruction (vpmaddwd + vpaddd on AVX2: 16 per two instructions). Both operands are exact integers below 2^15
// in magnitude, every product is exact in int32 and the compile-time bound keeps every partial sum below 2^30, so
// the multiply-based kernel produces exactly the integers the shift-based formulation defines, in any order.
// The log-domain structure is used where it pays: the level→mantissa table is decoded once per tensor (a
// 256-entry lookup), the codebook once per session, and the output scale 2^-(w_shift + x_shift) is a single
// exact power-of-two multiply per output (never per MAC).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace wq {

// The arithmetic threshold index: t[1..reach) as at most kMaxRuns runs, run k from threshold index j_k on for its
// len_k thresholds:
//   t[j] = ceil((X_k + (j - j_k)·step[k]) / 2^shift[k])      (step[k] ≥ 2^shift[k]: spacing ≥ 1)
// evenly spaced integers when shift[k] = 0, else the integer thresholds of an evenly spaced real set whose spacing
// step / 2^shift is a dyadic fraction (a narrow layer's accumulator is too coarse for its 8-bit levels' spacing to
// be an integer: MobileNetV2's s8 float-input convolutions, one Open-NSFW layer at spacing 26.5). For v ≥ t[1]:
//   k = #{k ≥ 1 : v ≥ start[k]},  level = first[k] + floor((min(v - start[k], cap[k])·2^shift[k] + frac[k]) / step[k])
// with start[k] = t[j_k], frac[k] = start[k]·2^shift[k] - X_k in [0, 2^shift[k]), cap[k] = t[j_k + len_k - 1] -
// start[k] and first[k] = j_k + 1 (every threshold before the run, and the run's first, are ≤ v): for an integer v,
// t[j] ≤ v ⇔ X_k + (j - j_k)·step ≤ v·2^shift, so the run's count is that floor plus one, and the cap stops it at
// len_k. Below t[1] the level is [v ≥ t[0]]. The vector paths read the run's constants with register permutes (no
// gather, no table in memory) and take the quotient x (< 256) one of two ways:
// * exact: trunc(fma(d >> rshift[k], mul[k], add[k])) with, for a dyadic run, rshift = 0, mul = 2^shift / step and
//   add = (frac + 1/2) / step, and for an integer run of step p'·2^z (p' odd), rshift = z, mul = 1/p', add =
//   1/(2p') (floor(d / p) = floor((d >> z) / p')). With p'' the divisor used, x is a multiple of 1/p'', so
//   x + 1/(2p'') is at least 1/(2p'') > 2^-14 from every integer when p'' < 2^13, and the float error stays below
//   2^-15 when the shifted d·2^shift + frac < 2^24 (exact in float; two roundings of ≤ 2^-24 relative on a value
//   < 257): the truncation is floor(x), one FMA and no correction. The compiler's steps are dyadic with 6
//   significant bits, so p' < 64 on any accumulator;
// * otherwise (integer runs only, shift = frac = 0; a set with a dyadic run that is not exact gets integer runs or
//   no index): one float multiply by inv[k] ≈ 1/step[k] (off by at most one), corrected with the integer remainder.
// Valid when start[0] ≥ -2^30 (so v - start fits int32 for |v| < 2^30) and cap[k]·2^shift[k] + frac[k] + step[k]
// < 2^31.
//
// The lines form (lines > 0, AVX-512 only; the scalar and AVX2 paths keep the runs above). When every run is an
// integer run, all of t[1..reach) lie on one grid t[j] = start[0] + n_j·g (g the gcd of their offsets) and every
// run's spacing is g·2^s_k, the level is a function of u = floor((v - start[0]) / g) alone, and on run k
//   level = first[k] + floor((u - n_{j_k}) / 2^s_k) = (u + line_add[k]) >> line_shift[k],  line_add[k] = first[k]·2^s_k - n_{j_k}.
// When the spacings grow (the segmented quantizer's), this count is concave in u, so it is the minimum of the runs'
// lines, capped at the top level: one quotient (the exact one-FMA form on (v - start[0]) >> line_rshift, capped at
// line_cap) with no per-lane run choice and no register permute, then an add, an arithmetic shift and a min per
// line (u is capped at the last threshold's grid index, where the last line reaches the top level). build_threshold_runs keeps it only after checking it against the count for every u up to the last
// threshold (and the quotient at every multiple of g and one below it: the truncated FMA is monotone in its input,
// so those points prove every other), so concavity is checked, not assumed.
constexpr int kMaxRuns = 8;
constexpr int kMaxLines = 4;
constexpr int kMaxRunShift = 6;   // the compiler's dyadic steps have 6 significant bits: spacing ≥ 1 needs ≤ 2^-5
struct ThresholdRuns {
  int count = 0;                 // runs; 0: no index
  bool exact = false;            // the one-FMA quotient (mul, add) is exact for every run
  int lines = 0;                 // the lines form (see above): its line count, 0 when it does not hold
  int32_t line_cap = 0;          // cap of v - start[0]: the last threshold's offset (u past it is the top level)
  int32_t line_rshift = 0;       // g = g'·2^line_rshift, g' odd: u = trunc(fma(d >> line_rshift, line_mul, line_add_q))
  float line_mul = 0.0f, line_add_q = 0.0f;
  int32_t line_add[kMaxLines] = {};
  int32_t line_shift[kMaxLines] = {};
  alignas(64) int32_t start[16];
  alignas(64) int32_t step[16];
  alignas(64) int32_t cap[16];
  alignas(64) int32_t first[16];
  alignas(64) int32_t shift[16];
  alignas(64) int32_t frac[16];
  alignas(64) float inv[16];
  alignas(64) float mul[16];
  alignas(64) float add[16];
  alignas(64) int32_t rshift[16];
};

// Splits v[begin..end) (non-decreasing int64 values) into runs (longest first, the smallest shift ≤ max_shift among
// equally long ones): true and *out filled when there are at most kMaxRuns and every value, spacing and cap fits
// the vector arithmetic; false (count = 0) otherwise, and for three equal values in a row. `first_level` is the level
// at v[begin] (the number of thresholds up to and including it).
bool build_threshold_runs(const int64_t* v, int begin, int end, int first_level, ThresholdRuns* out,
                          int max_shift = kMaxRunShift);

// int32 "≥" thresholds of a fused output quantizer, padded for vector counting: level = #{j : t[j] ≤ acc}.
struct ThresholdTable {
  int count = 0;               // L - 1, 1..255
  int blocks = 1;              // ceil((count + 1) / 16): blocks of 16 with at least one padding entry in total
  alignas(64) int32_t padded[256];       // t[0..count), then INT32_MAX (never ≤ an accumulator < 2^30)
  alignas(64) int32_t transposed[16][16];  // transposed[j][b] = padded[16 b + j]
  // O(1) index (log-domain buckets, see threshold_bucket): bucket[b] = padded[lo] | (lo + slow) << 32 with
  // lo = #{j : bucket(t[j]) < b} and slow = kBucketSlow when more than one threshold falls in bucket b. For v in a
  // bucket holding at most one threshold: level = lo + [padded[lo] ≤ v] (thresholds of later buckets are > v,
  // those of earlier ones ≤ v), exactly #{j : t[j] ≤ v}; otherwise search.
  alignas(64) uint64_t bucket[1024];
  // The same index in one int32 per bucket (one 16-lane dword gather instead of two qword gathers, ~3x faster on
  // AVX-512): packed[b] = L | R << 8 with level = L + [v - start(b) ≥ R] for v ≥ t[0] in bucket b, start(b) = v
  // with the bits below its leading one and P more cleared (P = packed_bits, below). A bucket with no threshold: L = lo - 1, R = 0; one
  // threshold: L = lo, R = t - start(b); a bucket of width 1 (v < 2^P) with k equal thresholds: L = lo + k - 1,
  // R = 0. Thresholds ≥ 2^30 are left out: prepare_layer enforces |acc| ≤ 2^30 - 1, so they are never met
  // (the compiler clamps unreachable ones, e.g. above a folded Clip, to 2^30). Used only when every threshold is
  // ≥ 1 and every bucket of width > 1 holds at most one of the others (packed_ok; WQ log-spaced sets always at
  // P = 5, their duplicates are small integers); else the 64-bit index above.
  // The resolution is chosen per table (packed_bits = P, 5..9 bits below the leading one: the smallest for which the
  // condition above holds, so near-uniform 8-bit sets such as Lloyd's or linear ones, denser than 1/32 octave at
  // their top, also get the one-gather path): bucket = 1 + 2^P·e + m (m the P bits below the leading one), 32·2^P
  // entries (≤ 64 KiB), start(b) = v with the bits below its leading one and P more cleared.
  bool packed_ok = false;
  int packed_bits = 5;
  int packed_shift = 18;           // 23 - P: float32 mantissa bits below the bucket's
  int32_t packed_key_bias = 4063;  // (127 << P) - 1: bucket = (bits(float(v)) >> packed_shift) - packed_key_bias
  std::vector<uint32_t> packed;    // 32 << P entries when packed_ok
  // Gather-free index of log-spaced sets (AVX-512 VBMI, octave_ok; build_octave_index): the P = 5 buckets of one
  // octave e (8 ≤ e ≤ 29) repeat the same pattern in every octave of a log-spaced set (the same thresholds up to a
  // factor 2^e), so the per-bucket data is stored once per *class* of octaves and the octave only adds its first
  // level. For v ≥ 256 with e = floor(log2 v), m the 5 bits below the leading one and frac = the k = e - 5 bits
  // below those, left-aligned in 24 bits ((v << (29 - e)) & 0xFFFFFF):
  //   level = min(base + L - [frac < D], octave_reach),  octave[(127 + e) & 31] = base << 8 | class,
  //   octave_class[32 class + m] = L | D << 8,
  // where base = lo - s, lo = #{j : t[j] < 2^e}, s the octave's shift against its class (0 for a full octave; a
  // partial one may count from another level) and [frac ≥ D] ⇔ v - start(bucket) ≥ ceil(D / 2^(24-k)) = the
  // residual of the bucket's threshold (each octave of a class has D in its interval; L - s - 1 + [..] or L - s
  // counts the thresholds of the octave below v). v < 256: level = octave_small[v]; v < t[0]: 0. Every lookup is a
  // register permute (two vpermi2d for the octave and class entries, two vpermi2b for octave_small): no gather.
  // Built only when every octave from 8 to 29 fits one of at most two classes (WQ LogQuant sets whose step divides
  // an octave: one or two classes; Lloyd / linear sets do not qualify and keep the packed index).
  bool octave_ok = false;
  int octave_classes = 1;                   // 1 or 2 (entries 32..63 repeat 0..31 with one)
  int32_t octave_reach = 0;                 // #{j : t[j] < 2^30}
  alignas(64) int32_t octave[32];
  alignas(64) uint32_t octave_class[64];
  alignas(64) uint8_t octave_small[256];
  // Arithmetic index (runs.count > 0): piecewise evenly spaced sets (the compiler's segmented and linear activation
  // quantizers, whose step has few significant bits so that their integer thresholds come out evenly spaced, or
  // evenly spaced up to the rounding of a dyadic spacing, within each run): see ThresholdRuns. t[0] stands apart (the compiler's strict first threshold is one
  // above the grid); the runs cover t[1..reach), reach = #{j : t[j] < 2^30}.
  ThresholdRuns runs;
};

// The bucket of v at P bits of resolution (P = 5 is threshold_bucket): 0 for v ≤ 0, else 1 + 2^P·e + m.
inline int threshold_bucket_p(int32_t v, int p) {
  const uint64_t u = v > 0 ? static_cast<uint64_t>(v) : 0;
  const int e = 31 - __builtin_clz(static_cast<uint32_t>(u | 1u));
  const int m = static_cast<int>(((u << p) >> e) & ((1u << p) - 1u));
  return u != 0 ? 1 + (e << p) + m : 0;
}

constexpr int32_t kBucketSlow = 1 << 16;

// A monotone bucket index of v: 0 for v ≤ 0, else 1 + 32·e + m with e = floor(log2 v) and m the 5 bits below the
// leading one (= the truncated float32 exponent and top 5 mantissa bits, so a vector path may compute it with a
// round-toward-zero int→float conversion). At most 992. WQ log-spaced thresholds (≥ 1/16 octave apart) are more
// than a bucket (≤ 1/32 of the value) apart, so each bucket holds at most one.
inline int threshold_bucket(int32_t v) {   // branch-free: accumulator signs are unpredictable
  const uint64_t u = v > 0 ? static_cast<uint64_t>(v) : 0;
  const int e = 31 - __builtin_clz(static_cast<uint32_t>(u | 1u));
  const int m = static_cast<int>(((u << 5) >> e) & 31u);   // the 5 bits below the leading one
  return u != 0 ? 1 + 32 * e + m : 0;
}

// float32 "≥" thresholds of QRelu, padded with NaN (a NaN threshold is never ≤ x).
struct FloatThresholds {
  int count = 0;
  int blocks = 1;
  alignas(64) float padded[256];
  alignas(64) float transposed[16][16];
  // The 32-bit bucket index of ThresholdTable::packed on the float bits (positive floats order as their bits):
  // for x ≥ t[0] > 0, key = min(bits(x) >> packed_shift - base, packed_keys - 1) with packed_shift = 23 - P,
  // base = bits(t[0]) >> packed_shift (the exponent and P mantissa bits: 1/2^P octave at worst), level =
  // L + [bits(x) & (2^packed_shift - 1) ≥ R] with packed[key] = L | R << 8. Exact: a key's floats are the bit
  // patterns from key << packed_shift on, so the low bits order them within the key, and a key holding at most one
  // threshold t counts t exactly when those bits of x reach t's (R); keys past the last threshold's say `count`.
  // The resolution is chosen per table (packed_bits = P, 5..9, packed_keys = 32·2^P ≤ 64 KiB), the coarsest for
  // which every threshold's key is < packed_keys - 1 (within 32 octaves of t[0]) and each key holds at most one
  // threshold (packed_ok): WQ log-spaced sets at P = 5, near-uniform 8-bit sets (Lloyd, linear; denser than 1/32
  // octave at their top) at P = 7..8. NaN and x < t[0] are level 0 without a lookup.
  bool packed_ok = false;
  int packed_bits = 5;
  int packed_shift = 18;
  int32_t packed_keys = 1024;
  int32_t base = 0;
  std::vector<uint32_t> packed;    // packed_keys entries when packed_ok
  // Gather-free octave-class index (octave_ok; AVX-512, built with the VBMI paths: cpu_supports_avx512_vbmi), as
  // ThresholdTable::octave on the float bits: for x ≥ t[0] with biased exponent E = bits >> 23 < octave_top >> 23,
  // m = bits 18..22 and frac = bits & 0x3FFFF (exact: the float's own mantissa bits),
  //   level = min(base + L - [frac < D], count),  octave[E & 31] = base << 8 | class,  octave_class[32 class + m] = L | D << 8,
  // base = lo - s as there, lo = #{j : t[j] < 2^(E - 127)}; x ≥ bits octave_top (33 octaves above t[0]'s, +Inf) is
  // level count. The 33rd octave (bits ≥ octave_wrap) shares the slot and class of t[0]'s and adds the difference
  // of their bases, octave_wrap_add
  // (a 255-level set 1/8 octave apart spans 31.9 octaves, so up to 33 of them). Built when every threshold is
  // finite, within those octaves, and the octaves fit at most two classes (geometric sets: float rounding is
  // scale-invariant, so their octaves repeat exactly).
  bool octave_ok = false;
  int octave_classes = 1;
  int32_t octave_top = 0;
  int32_t octave_wrap = 0;
  int32_t octave_wrap_add = 0;
  alignas(64) int32_t octave[32];
  alignas(64) uint32_t octave_class[64];
  // Arithmetic index (runs.count > 0), ThresholdTable::runs on the integers the thresholds are multiples of:
  // t[j] = N_j·u for j ≥ 1 with u = 2^E and every N_j < 2^24 an integer (the segmented / linear quantizers'
  // thresholds are dyadic with few significant bits). For x ≥ t[1] (so x > 0; +Inf included)
  //   n = trunc(min(x, t[count - 1]) · 2^-E)   (exact: a power-of-two scaling of a float below 2^24·u)
  // and x ≥ t[j] ⇔ n ≥ N_j (N_j an integer), so level = the runs' count for n; below t[1] it is [x ≥ t[0]] (NaN: 0).
  // Built when count > 15 and every threshold is finite.
  ThresholdRuns runs;
  float runs_unit_inv = 1.0f;   // 2^-E
  float runs_top = 0.0f;        // t[count - 1]
};

void build_threshold_table(const int32_t* t, int count, ThresholdTable* out);
void build_float_thresholds(const float* t, int count, FloatThresholds* out);

// A test switch, read when a table is built: WQCOMPILE_REQUIRE_THRESHOLD_INDEX=octave (=arithmetic, =lines) makes a
// table of more than 15 thresholds without the octave-class index (the arithmetic index, its lines form) an error,
// any other value not starting with '0' one without any of the packed, octave or arithmetic indexes (i.e. left to
// the bucket / binary search).
// Returns the complaint (naming the index the table got) or "" (the callers fail() with it, so tests prove which
// index a set gets).
std::string threshold_index_refusal(int count, bool packed_ok, int packed_bits, bool octave_ok, int runs = 0,
                                   int lines = 0);

// One output plane of a depthwise convolution (one input channel, one filter), accumulators only.
// The caller passes the input already zero-padded (pad_top = pad_left = 0) with at least 256 readable int16 past the
// end of the plane, so vector kernels may read whole vectors at the right edge.
struct DepthwisePlane {
  const int16_t* x;       // [h, w] input mantissas
  int64_t h, w;
  const int32_t* filter;  // [kh, kw] weight mantissas
  int64_t kh, kw, sh, sw, dh, dw, pad_top, pad_left;
  int32_t* acc;           // [oh, ow] output accumulators (written, not accumulated into)
  int64_t oh, ow;
  int32_t* scratch;       // oh·w + 128 int32 of scratch
};

// A block of up to 16 channels of one image of a depthwise convolution with the channels in the vector lanes
// (IsaKernels::depthwise_lanes; small planes, where the per-plane passes cost more than the arithmetic): uint8
// level input, fused level output with one thresholds table for every channel (one shared codebook, optionally row
// scaled), 16 outputs (one pixel of 16 channels) per vector and the whole output edge in registers.
struct DepthwiseLanes {
  const uint8_t* x;            // channel c's [h, w] levels at x + c·h·w, c < nc
  int64_t nc;                  // channels of the block, 1..16
  int64_t h, w, pt, pl;        // input plane and its top / left padding
  int64_t kh, kw, sh, sw, dh, dw;   // kh, kw ≤ 16
  int64_t oh, ow;              // output plane (the bottom / right padding follow from these)
  const int16_t* table256;     // level → mantissa (kLevelTableInt16 layout)
  const int32_t* filter;       // [nc][kh·kw] weight mantissas
  const int32_t* bias;         // [nc]
  const int32_t* row_scale;    // [nc], or nullptr (op-contract §2.1)
  const ThresholdTable* table; // the one thresholds row
  uint8_t* y;                  // channel c's [oh, ow] levels at y + c·oh·ow
  void* scratch;               // DepthwiseLanesLayout::bytes, 64-byte aligned
};

// The scratch of depthwise_lanes, in bytes from its start: the input transposed to [h·w][16] levels; one padded
// row of [wpc + dw][16] int16 mantissas; the pair image [hn][wpc][16] int32 = (X[y][x], X[y][x + dw]) per channel
// (hn padded rows are read, wpc ≥ the padded width plus three strides: a vector group of 4 pixels may run past a
// row's last output); the output levels [oh·ow + 4][16].
struct DepthwiseLanesLayout {
  int64_t hn, wpc;
  size_t transposed, row, pairs, levels, bytes;
};

inline DepthwiseLanesLayout depthwise_lanes_layout(const DepthwiseLanes& p) {
  auto up64 = [](size_t b) { return (b + 63) / 64 * 64; };
  DepthwiseLanesLayout l{};
  l.hn = (p.oh - 1) * p.sh + (p.kh - 1) * p.dh + 1;
  l.wpc = (p.ow - 1) * p.sw + (p.kw - 1) * p.dw + 1 + 3 * p.sw;
  l.transposed = 0;
  l.row = l.transposed + up64(static_cast<size_t>(p.h * p.w) * 16);
  l.pairs = l.row + up64(static_cast<size_t>(l.wpc + p.dw) * 32);
  l.levels = l.pairs + static_cast<size_t>(l.hn * l.wpc) * 64;
  l.bytes = l.levels + up64(static_cast<size_t>(p.oh * p.ow + 4) * 16);
  return l;
}

// One packed B panel of a convolution: rows are pairs of input channels at one kernel tap, k = (q, ky, kx) with the
// channel pair q slowest; columns are output pixels, given as runs that stay within one output row.
struct PanelRun {
  int64_t src;   // offset (in int32 pairs) of the run's first pixel at q = ky = kx = 0 in the padded pair image
  int32_t col;   // first panel column of the run
  int32_t len;   // columns in the run
};

struct PanelPack {
  // padded pair image: [.., q, y, x] int32 = (X[2q], X[2q+1]) as two int16, readable for 31 int32 past every run's
  // last pixel (the vector paths copy runs in whole vectors; the caller's image buffer has 64 int32 of slack)
  const int32_t* x2;
  const PanelRun* runs;
  int nruns;
  int64_t nq, kh, kw;         // channel pairs of the group and kernel size
  int64_t q_stride, ky_stride, kx_stride, sx;   // int32 steps: next pair plane, next ky, next kx, next column
  int32_t* dst;               // [nq·kh·kw][nr] int32 pairs; columns ncols..nr are zeroed
  int64_t nr, ncols;
};

// The output edge of one GEMM tile applied in registers (QConv, when the tile's columns lie in one image): row r
// of the tile goes to out[r] (contiguous), with bias[r], and either levels through tables[r] (fused quantizer)
// or float32(acc + bias) · scale[r] (an exact power of two, see edge_float). With row_scale (op-contract §2.1)
// the quantizer reads floor(acc · row_scale[r] / 2^22) + bias[r], as scale_rows, and a float output is
// float32(acc · row_scale[r] · 2^-22 + bias[r]) · scale[r] (as edge_float_scaled).
struct TileEdge {
  const int32_t* bias;
  const ThresholdTable* const* tables;   // nullptr: float output
  const float* scale;
  void* const* out;
  bool raw = false;   // QConvMaxPool: out[r] is int32 acc + bias (no quantizer, no scale)
  const int32_t* row_scale = nullptr;
};

// One plane of a 2-D max pool over uint8 levels (LevelMaxPool): y[oy, ox] = max over the window's taps inside the
// plane of x[oy·sh + ky·dh - pt, ox·sw + kx·dw - pl]; 0 for a window entirely in the padding (levels are ≥ 0, so
// 0 is also the identity of the max). `rowmax` is w bytes of scratch.
struct PoolPlane {
  const uint8_t* x;       // [h, w]
  int64_t h, w;
  uint8_t* y;             // [oh, ow]
  int64_t oh, ow;
  int64_t kh, kw, sh, sw, dh, dw, pt, pl;
  uint8_t* rowmax;
};

// One plane of a 2-D max pool over int32 accumulators (QConvMaxPool pools before quantizing), dilation 1: y[oy, ox]
// = max over the window's taps inside the plane of x[oy·sh + ky - pt, ox·sw + kx - pl]; INT32_MIN for a window
// entirely in the padding. `rowmax` is w + 2·kw + 96 int32 of scratch (vector reads past w stay inside it).
struct PoolPlaneI32 {
  const int32_t* x;       // [h, w]
  int64_t h, w;
  int32_t* y;             // [oh, ow]
  int64_t oh, ow;
  int64_t kh, kw, sh, sw, pt, pl;
  int32_t* rowmax;
};

// The level tables handed to lookup / pair_levels: 256 int16 mantissas (zero past the layer's table), then the same
// entries as two byte planes, their low bytes and their high bytes (256 bytes each, read by the AVX-512 VBMI path's
// byte permutes: 64 lookups per vpermi2b pair). fill_level_table_planes writes the planes from the mantissas.
constexpr size_t kLevelTableInt16 = 512;
inline void fill_level_table_planes(int16_t* table) {
  uint8_t* planes = reinterpret_cast<uint8_t*>(table + 256);
  for (int j = 0; j < 256; ++j) {
    const uint16_t u = static_cast<uint16_t>(table[j]);
    planes[j] = static_cast<uint8_t>(u & 0xFF);
    planes[256 + j] = static_cast<uint8_t>(u >> 8);
  }
}

// planes[256 b + j] = byte b (little-endian) of table[j], j < 256: the layout IsaKernels::add_qrelu reads right
// after its 256-float table (DecodeTable)
inline void fill_float_table_planes(const float* table, uint8_t* planes) {
  for (int j = 0; j < 256; ++j) {
    uint32_t u;
    __builtin_memcpy(&u, table + j, sizeof(u));
    for (int b = 0; b < 4; ++b) planes[256 * b + j] = static_cast<uint8_t>(u >> (8 * b));
  }
}

struct IsaKernels {
  const char* name;
  int mr;      // rows of a GEMM tile
  int nr;      // columns of a packed B sub-panel (a multiple of the vector width)
  // c[r * ldc + j] = Σ_p a[r * lda + 2p] · b[p * ldb + 2j] + a[r * lda + 2p + 1] · b[p * ldb + 2j + 1]
  // for r < rows (≤ mr), j < ncols (≤ nr), p < kp. `b` rows are int16 pairs: a packed sub-panel (ldb = 2·nr) or a
  // view of the pair image (1x1 convolutions); whole vectors of nr columns are read from every row, so columns
  // past ncols must be readable (their results are discarded). `a` rows are int16 pairs (lda even, in int16).
  void (*gemm_tile)(const int16_t* a, size_t lda, const int16_t* b, size_t ldb, size_t kp, int32_t* c, size_t ldc,
                    int rows, int ncols);
  // y = clip(rint(x · scale), ±xmax), NaN → 0; scale is an exact power of two in float32's normal range
  void (*quantize)(const float* x, int16_t* y, size_t n, float scale, float xmax);
  // y = table[x]; returns max(x) (0 for n = 0), which the caller checks against the table size (a level past the
  // table reads one of its 256 entries, zero-filled, and is then reported as an error). table256 has the layout of
  // kLevelTableInt16 (mantissas, then their byte planes).
  uint8_t (*lookup)(const uint8_t* x, int16_t* y, size_t n, const int16_t* table256);
  // The rows of QConv's pair image straight from the input: dst[i] = the int16 pair (m(x0[i]), m(x1[i])) (low half
  // first), m = table lookup (returns the max level read, checked by the caller like lookup) or quantize; x1 ==
  // nullptr gives 0 in the high half (an odd channel count).
  uint8_t (*pair_levels)(const uint8_t* x0, const uint8_t* x1, int32_t* dst, size_t n, const int16_t* table256);
  void (*pair_floats)(const float* x0, const float* x1, int32_t* dst, size_t n, float scale, float xmax);
  uint8_t (*max_u8)(const uint8_t* x, size_t n);
  // y = float32(acc + bias) · scale (scale an exact power of two such that no result is subnormal or infinite)
  void (*edge_float)(const int32_t* acc, float* y, size_t n, int32_t bias, float scale);
  // y = floor(acc · r / 2^22) (a row scale, op-contract §2.1; 0 ≤ r ≤ 2^22, so |y| ≤ |acc|)
  void (*scale_rows)(const int32_t* acc, int32_t* y, size_t n, int32_t r);
  // y = #{j : t[j] ≤ acc + bias}
  void (*edge_levels)(const int32_t* acc, uint8_t* y, size_t n, int32_t bias, const ThresholdTable* t);
  // y = #{j : t[j] ≤ x} (NaN → 0)
  void (*qrelu)(const float* x, uint8_t* y, size_t n, const FloatThresholds* t);
  // y = table[x] (checked by the caller)
  void (*qdecode)(const uint8_t* x, float* y, size_t n, const float* table256);
  void (*depthwise)(const DepthwisePlane& p);
  void (*pack_panel)(const PanelPack& p);
  void (*max_pool)(const PoolPlane& p);
  void (*max_pool_i32)(const PoolPlaneI32& p);
  // y = #{j : t[j] ≤ a + b} (QRelu of ONNX Add, NaN → 0) with b[i] or, when lv is not null, table256[lv[i]]
  // (levels checked against table_size by the caller; table256 is followed by its byte planes,
  // fill_float_table_planes: a DecodeTable)
  void (*add_qrelu)(const float* a, const float* b, const uint8_t* lv, const float* table256, int table_size,
                    uint8_t* y, size_t n, const FloatThresholds* t);
  // gemm_tile followed by the edge in registers; nullptr when the instruction set has no fused version
  void (*gemm_tile_edge)(const int16_t* a, size_t lda, const int16_t* b, size_t ldb, size_t kp, int rows, int ncols,
                         const TileEdge& edge);

  // ---- The u8 × s8 path of QConv (AVX-512 VNNI vpdpbusd: 64 MACs per instruction, twice vpdpwssd's 32), nullptr
  // where the instruction set has none (baseline, AVX2: those keep the int16 pair path). QConv takes it for a
  // layer whose level table is within 0..255 and whose decoded weight mantissas are within -128..127 (see qconv.cc):
  // then every level mantissa is a u8 and every weight an s8, each product is exact (|u8 · s8| ≤ 255 · 128) and
  // vpdpbusd (the non-saturating form) adds four of them to the int32 accumulator exactly, since the accumulator
  // bound (op-contract §2) keeps every partial sum below 2^30. The accumulators are therefore the same integers as
  // the int16 path's, in a different summation order, which the bound makes irrelevant.
  //
  // The rows of QConv's *quad image*: dst[i] = the bytes (m(x0[i]), m(x1[i]), m(x2[i]), m(x3[i])), byte 0 first,
  // m = the level table (kLevelTableInt16 layout, every entry within 0..255, so its low-byte plane is the table
  // itself); a null channel pointer gives 0 in its byte (channels past the group's count). Returns the max level
  // read, checked by the caller like pair_levels.
  uint8_t (*quad_levels)(const uint8_t* x0, const uint8_t* x1, const uint8_t* x2, const uint8_t* x3, int32_t* dst,
                         size_t n, const int16_t* table256);
  // The quad image of a float32 input whose mantissas fit an s8 (x_max ≤ 127): byte c of dst[i] =
  // clip(rint(x_c[i] · scale), ±xmax) + 128 (NaN → 0, then + 128), a null channel gives 128. The GEMM then sums
  // Σ C · (m + 128), and QConv subtracts the constant 128 · Σ_k C[o, k] through the bias (padding is 128 too), so
  // the accumulators are again those of the int16 path. scale as in quantize.
  void (*quad_floats)(const float* x0, const float* x1, const float* x2, const float* x3, int32_t* dst, size_t n,
                      float scale, float xmax);
  // c[r * ldc + j] = Σ_q Σ_{i<4} a[r * lda + 4q + i] · b[q * ldb + 4j + i] (a signed, b unsigned bytes), for r < rows,
  // j < ncols, q < kq; strides in bytes. As gemm_tile, whole vectors of nr columns are read from every b row.
  void (*gemm_tile_u8)(const int8_t* a, size_t lda, const uint8_t* b, size_t ldb, size_t kq, int32_t* c, size_t ldc,
                       int rows, int ncols);
  // gemm_tile_u8 followed by the edge in registers (as gemm_tile_edge)
  void (*gemm_tile_u8_edge)(const int8_t* a, size_t lda, const uint8_t* b, size_t ldb, size_t kq, int rows,
                            int ncols, const TileEdge& edge);
  // One DepthwiseLanes block; returns the largest input level read (checked by the caller, as lookup's). nullptr
  // when the instruction set has none (then the per-plane depthwise runs).
  uint8_t (*depthwise_lanes)(const DepthwiseLanes& p);
  // y = float32(float64(acc · r) · 2^-22 + float64(bias)) · scale (op-contract §3 with a row scale; scale an exact
  // power of two in float32's normal range); nullptr: edge_segment's scalar loop
  void (*edge_float_scaled)(const int32_t* acc, float* y, size_t n, int32_t bias, int32_t r, float scale);
  // add_qrelu over `rows` rows (row r: a + r·lda, b or lv + r·ldb, y + r·ldy; n elements each) with the quantizer
  // and the decode table set up once (the residual join's tile: 8 rows of 48); nullptr: add_qrelu row by row
  void (*add_qrelu_rows)(const float* a, size_t lda, const float* b, const uint8_t* lv, size_t ldb,
                         const float* table256, int table_size, uint8_t* y, size_t ldy, int rows, size_t n,
                         const FloatThresholds* t);

  // ---- QGemm at a batch of a few rows over *nibble panels* (AVX-512: vpermw; nullptr elsewhere, which keeps the
  // int16 panels). One row of a GEMV uses each weight once, so the int16 panel streams from L3 at that batch
  // (MNIST fc1, 3136 x 128: 800 KB of int16 weights, bandwidth-bound); a panel of 16 columns whose weights take
  // at most 16 distinct values is stored as 4-bit indices into its own table (a quarter of the bytes, resident in
  // L2) and decoded in registers. The decoded weights are the same int16 values, so the accumulators are exact.
  //   c[r * ldc + j] = Σ_p a[r * lda + 2p] · W[2p][j] + a[r * lda + 2p + 1] · W[2p + 1][j], j < 16, p < kp,
  // r < rows ≤ kNibbleRows. Layout (NibblePanels): 64 bytes per block of four k-pairs; word i of block g (lane i of
  // a vpdpwssd: column i / 2, k = 2p + i % 2) holds in its nibble q the table index of W[2p + i % 2][i / 2] for the
  // pair p = 4g + q. table32: the panel's values, its 16 entries repeated twice (vpermw reads 5 index bits).
  void (*gemv_nibbles)(const int16_t* a, size_t lda, const uint8_t* nibbles, const int16_t* table32, size_t kp,
                       int32_t* c, size_t ldc, int rows);

  // ---- QConvMaxPool with a 2x2, stride-2 pool: the pool inside the tile (AVX-512; nullptr elsewhere, which keeps
  // the int32 accumulators and max_pool_i32). b is a *pool panel*: two half-panels of kp rows of kPoolLanes · 2
  // columns (ldb apart as in gemm_tile; the second half kp · ldb on), column kPoolLanes · dx + l of half dy being
  // the conv output pixel (2 py + dy, 2 px + dx) of the tile's pooled position l. Row r's output, for l < ncols
  // (≤ kPoolLanes): edge(max over the four pixels' accumulators) into edge.out[r][l] (levels: QConvMaxPool's
  // tables). Exact: the max commutes with the bias and the non-decreasing quantizer.
  void (*gemm_tile_pool_edge)(const int16_t* a, size_t lda, const int16_t* b, size_t ldb, size_t kp, int rows,
                              int ncols, const TileEdge& edge);
  void (*gemm_tile_u8_pool_edge)(const int8_t* a, size_t lda, const uint8_t* b, size_t ldb, size_t kq, int rows,
                                 int ncols, const TileEdge& edge);
};

// the pooled positions of one pool panel (IsaKernels::gemm_tile_pool_edge): one vector of int32 lanes
constexpr int kPoolLanes = 16;

// the rows up to which QGemm takes IsaKernels::gemv_nibbles. The decode is shared by the rows, but from about 3
// rows on the int16 panels are no longer bandwidth-bound (MNIST fc1, one thread: 1 row 13.4 against 18.7 µs, 2 rows
// 16.8 against 20.5, 4 rows (four accumulators each, spilled) 42.5 against 25.2)
constexpr int kNibbleRows = 2;

// The instruction set to use: WQCOMPILE_ISA=baseline|avx2|avx512 forces one (an error if this CPU lacks it);
// unset or "auto" picks the best the CPU supports. Read when a kernel is created.
const IsaKernels& select_isa();
bool cpu_supports_avx2();
bool cpu_supports_avx512();
// AVX-512 VBMI (vpermi2b) on top of cpu_supports_avx512(); WQCOMPILE_NO_VBMI=1 turns the VBMI paths off (tests, A/B)
bool cpu_supports_avx512_vbmi();

}  // namespace wq
