// "cpu_direct": grouped, depthwise and dense convolution computed directly on the CPU,
// called from XLA through its FFI (jaxconv/_src/impl/cpu_direct.py builds and registers it).
//
// Two layouts (prepared by the Python side):
//
// * groups in the lanes (depthwise, and groups whose output channels are not a multiple
//   of 8): the groups are the innermost axis, padded to a multiple of 16 (Gp), so
//   that one vector holds one value of 16 groups (8 on AVX2) and every group does the same
//   arithmetic in its own lane:
//
//     x  (N, D, H, W, Cg, Gp)       input, Cg input channels per group
//     w  (KD, KH, KW, Cg, M, Gp)    kernel, M output channels per group
//     y  (N, OD, OH, OW, M, Gp)     output
//
// * channels last (M % 8 == 0, dense layers included as one group; the "Nhwc" handlers):
//   the operands as they come, a vector holding 8 or 16 output channels of one group
//   (see `nhwc_block`).
//
// Lower-rank convolutions arrive with size-1 leading spatial axes. The geometry is one
// int64 attribute `geom` (see `Geom`). Input (lhs) dilation is handled by index
// arithmetic (no zeros are read), so the input gradient of a strided convolution runs
// here too; taps that fall in the padding are skipped (a 31x31 kernel on a 14x14 input
// does the work of the 14x14 taps it can reach).
//
// Work is split over output rows (n, od, oh) and run on XLA's intra-op thread pool
// (channels-last kernels that are large: over the result or runs of output channels).

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <numeric>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// The vector the loops compute with: kLanes floats, kRegs of them in the register file
// (AVX-512: 16 floats, 32 registers; AVX2 and other targets: 8 floats, 16 registers, the
// compiler splitting them where the hardware's are narrower). The register blocks below
// are sized from kRegs. The Python side pads the lanes layout's groups to a multiple of
// 16, a whole number of vectors on either.
#if defined(__AVX512F__)
constexpr int kLanes = 16;
constexpr int kRegs = 32;
#else
constexpr int kLanes = 8;
constexpr int kRegs = 16;
#endif
// Outputs larger than this go to memory with streaming stores (whole lines: no read of
// each line before it is written). 8 MB until NOTES.md section 19: on the Zen 3,
// MobileNetV2's 28x28x192 depthwise output (4.8 MB) 0.92 -> 0.56 ms forward with warm
// caches, 1.75 -> 1.21 with cold ones; 2-4 MB outputs gained nothing.
constexpr int64_t kStreamBytes = 4 << 20;
// Channels-last kernel gradients larger than this split over the result, not the rows.
constexpr int64_t kSplitResultBytes = 512 << 10;
// The channels-last kernel gradients sum in tiles of about this many bytes of input and
// cotangent: a row's columns where split over the rows (measured on WaveNet's
// 16000-column rows, NOTES.md section 19: 125 -> 82-84 ms forward+backward with
// 32-512-column tiles), runs of rows where split over the result (section 20: 32-128 KB
// alike, 1.3-1.8x faster than untiled).
constexpr int64_t kKgradTileBytes = 64 << 10;
// Channels-last forwards with kernels larger than this (beyond what the L3 cache keeps
// for every row to re-read) split over runs of output channels as well as rows. With 16
// registers a block has 6 columns, not 16, and re-reads the kernel 2.7x as often: there
// (measured on a Zen 3 with 512 KB of L2, NOTES.md section 17) 4 MB.
constexpr int64_t kKernelRunsBytes = kRegs >= 32 ? 16 << 20 : 4 << 20;
// Channels-last forwards with rows of at most 8 columns take several whole rows per block
// when a vector's kernel slice is larger than this (NOTES.md section 16: 1.17-1.52x at
// 147 KB-885 KB, 0.94-0.97 at 37-74 KB, 0.68-0.70 below 10 KB).
constexpr int64_t kRowsBlockBytes = 128 << 10;
typedef float vf __attribute__((vector_size(kLanes * sizeof(float))));

inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof(v)); }

// Keeps a loaded vector in a register: one load, not a memory operand in every
// multiply-add that uses it (where the vector is one register wide).
inline void in_register(vf& v) {
#if defined(__AVX__)
  asm("" : "+v"(v));
#endif
}

// A store of a vector of floats straight to memory (no read of the line first, no cache
// pollution) at an address aligned to the vector's size: a plain store where the
// instruction set has no streaming store. `stream_fence` orders them before returning.
template <typename V>
inline void stream_store(float* p, V v) {
#if defined(__AVX512F__)
  if constexpr (sizeof(V) == 64) return _mm512_stream_ps(p, reinterpret_cast<__m512>(v));
#endif
#if defined(__AVX__)
  if constexpr (sizeof(V) % 32 == 0) {
    for (size_t i = 0; i < sizeof(V) / 32; ++i) {
      __m256 h;
      std::memcpy(&h, reinterpret_cast<const char*>(&v) + 32 * i, 32);
      _mm256_stream_ps(p + 8 * i, h);
    }
    return;
  }
#endif
  std::memcpy(p, &v, sizeof(V));
}
inline void stream_fence() {
#if defined(__SSE__)
  _mm_sfence();
#endif
}

template <typename V>
inline V loadv(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V>
inline void storev(float* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}
// A block's result vector, with a streaming store where `stream` is set.
template <typename V>
inline void store_result(float* p, V v, bool stream) {
  if (stream) return stream_store(p, v);
  storev(p, v);
}

// p + step, computed here: the compiler then addresses a block's vectors from one
// pointer per input row with constant offsets, instead of holding (and spilling) a
// separately computed address for every column of the block.
template <typename T>
inline T* next(T* p, int64_t step) {
  p += step;
  asm("" : "+r"(p));
  return p;
}

struct Geom {
  int64_t N, D, H, W, Cg, Gp, KD, KH, KW, M, OD, OH, OW;
  int64_t sd, sh, sw;  // window strides
  int64_t pd, ph, pw;  // low pads (may be negative: crops)
  int64_t rd, rh, rw;  // kernel (rhs) dilation
  int64_t ld, lh, lw;  // input (lhs) dilation
};
constexpr int64_t kGeomSize = 25;

// Position in the undilated input read by output `o` through tap `k`, or -1.
inline int64_t input_index(int64_t o, int64_t k, int64_t s, int64_t p, int64_t r,
                           int64_t l, int64_t size) {
  int64_t q = o * s + k * r - p;
  if (q < 0) return -1;
  if (l != 1) {
    if (q % l) return -1;
    q /= l;
  }
  return q < size ? q : -1;
}

// Runs body(i) for i in [0, n) on the calling thread and the pool's threads; returns
// when all are done. Chunks are claimed from a shared counter, so a task the pool
// starts late (or never) only finds nothing left to do.
template <typename Pool, typename Body>
void parallel_for(Pool& pool, int64_t n, const Body& body) {
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto state = std::make_shared<State>();
  int64_t helpers = std::min<int64_t>(pool.num_threads(), n) - 1;
  auto work = [state, n, &body]() {
    for (int64_t i; (i = state->next.fetch_add(1)) < n;) {
      body(i);
      state->done.fetch_add(1, std::memory_order_release);
    }
  };
  // `body` is only touched for claimed chunks, and every chunk is done before return.
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([work]() { work(); });
  work();
  while (state->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

// Runs body(row) for every output row, in runs of consecutive rows (about 8 runs per
// thread, claimed dynamically): a thread's next row then re-reads the input rows its
// last one left in its caches.
template <typename Pool, typename Body>
void parallel_rows(Pool& pool, int64_t rows, const Body& body) {
  const int64_t run = std::max<int64_t>(1, rows / (8 * pool.num_threads()));
  parallel_for(pool, (rows + run - 1) / run, [&](int64_t i) {
    for (int64_t r = i * run; r < std::min(rows, (i + 1) * run); ++r) body(r);
  });
}

// ----------------------------------------------------------------------------------
// Forward: P output columns x MB output channels x GB vectors of groups per block.

// One kernel tap of an output row: the input row it reads (column 0 shifted by the
// tap's column offset kw * rw), its kernel slice, and kw (for the edge columns).
struct Tap {
  const float* x;
  const float* w;
  int64_t kw;
};

template <int P, int MB, int GB>
void forward_block(const Geom& g, const std::vector<Tap>& taps, const float* zeros,
                   float* y_row, int64_t ow0, int64_t m0, int64_t gv0) {
  const int64_t CgGp = g.Cg * g.Gp, MGp = g.M * g.Gp;
  vf acc[P][MB][GB];
  for (int p = 0; p < P; ++p)
    for (int mb = 0; mb < MB; ++mb)
      for (int b = 0; b < GB; ++b) acc[p][mb][b] = vf{};
  const int64_t np = std::min<int64_t>(P, g.OW - ow0);
  const int64_t first = ow0 * g.sw - g.pw;  // dilated input column of (ow0, kw = 0)
  const bool unit = g.lw == 1 && np == P;  // input columns first + kw * rw + p * sw
  const int64_t xstep = g.sw * CgGp, lane0 = gv0 * kLanes, wlane0 = m0 * g.Gp + lane0;
  for (const Tap& t : taps) {
    const float* xp[P];
    const int64_t i0 = first + t.kw * g.rw, i1 = i0 + (P - 1) * g.sw;
    if (unit && (i1 < 0 || i0 >= g.W)) continue;  // the whole block reads padding
    if (unit && i0 >= 0 && i1 < g.W) {              // the whole block reads the input
      const float* base = t.x + first * CgGp + lane0;
      for (int p = 0; p < P; ++p) xp[p] = base + p * xstep;
    } else {
      bool any = false;
      const float* row = t.x - t.kw * g.rw * CgGp;
      for (int p = 0; p < P; ++p) {
        int64_t iw = p < np ? input_index(ow0 + p, t.kw, g.sw, g.pw, g.rw, g.lw, g.W) : -1;
        xp[p] = iw >= 0 ? row + iw * CgGp + lane0 : zeros;
        any |= iw >= 0;
      }
      if (!any) continue;
    }
    {
      const float* wp = t.w + wlane0;
      if (MB == 1) {  // each input vector is used once: multiply-add straight from memory
        for (int64_t ci = 0; ci < g.Cg; ++ci)
          for (int b = 0; b < GB; ++b) {
            const vf wv = load(wp + ci * MGp + b * kLanes);
            for (int p = 0; p < P; ++p)
              acc[p][0][b] += load(xp[p] + ci * g.Gp + b * kLanes) * wv;
          }
      } else {
        // the MB x GB kernel vectors of an input channel stay in registers for P columns
        for (int64_t ci = 0; ci < g.Cg; ++ci) {
          vf wv[MB][GB];
          const float* wc = wp + ci * MGp;
          for (int mb = 0; mb < MB; ++mb)
            for (int b = 0; b < GB; ++b) wv[mb][b] = load(wc + mb * g.Gp + b * kLanes);
          for (int p = 0; p < P; ++p)
            for (int b = 0; b < GB; ++b) {
              const vf xv = load(xp[p] + ci * g.Gp + b * kLanes);
              for (int mb = 0; mb < MB; ++mb) acc[p][mb][b] += xv * wv[mb][b];
            }
        }
      }
    }
  }
  for (int64_t p = 0; p < np; ++p)
    for (int mb = 0; mb < MB; ++mb)
      for (int b = 0; b < GB; ++b)
        store(y_row + (ow0 + p) * MGp + (m0 + mb) * g.Gp + (gv0 + b) * kLanes, acc[p][mb][b]);
}

// Depthwise, for a block whose taps all read the input, with compile-time kernel width
// KW and stride S and no dilation: the KW x GB kernel vectors of a kernel row stay in
// registers and each input vector is loaded once and added into every output column
// it reaches (about (P + KW) / (P * KW) loads per multiply-add instead of one).
//
// With EDGE, input columns outside [0, W) are skipped (they are the padding), and only
// the first `np` output columns are stored: the same block covers the edges of a row.
//
// The block's P outputs start at y0 and are ystep floats apart; output p reads input
// columns first + p * S + j through kernel columns kw0 + j * kwstep (j < KW). An
// input-dilated row runs as its phases (`depthwise_phases`): every lw-th output column
// (ystep = lw * Gp) through every lw-th kernel column (kwstep = lw).
template <int P, int GB, int KW, int S, bool EDGE>
void depthwise_slide(const Geom& g, const std::vector<Tap>& taps, float* y0, int64_t ystep,
                     int64_t first, int64_t kw0, int64_t kwstep, int64_t gv0, int64_t np,
                     bool stream) {
  static_assert(P >= 1, "no room in the registers for this sliding block");
  vf acc[P][GB];
  for (int p = 0; p < P; ++p)
    for (int b = 0; b < GB; ++b) acc[p][b] = vf{};
  const int64_t lane0 = gv0 * kLanes;
  for (size_t t = 0; t < taps.size(); t += g.KW) {  // g.KW taps per kernel row, kw = 0 first
    const float* xc = taps[t].x + first * g.Gp + lane0;
    const float* wc = taps[t].w + kw0 * g.Gp + lane0;
    vf wv[KW][GB];
    for (int kw = 0; kw < KW; ++kw) {
      for (int b = 0; b < GB; ++b) wv[kw][b] = load(wc + b * kLanes);
      wc = next(wc, kwstep * g.Gp);
    }
#pragma GCC unroll 64
    for (int i = 0; i < (P - 1) * S + KW; ++i) {
      if (!EDGE || static_cast<uint64_t>(first + i) < static_cast<uint64_t>(g.W)) {
#pragma GCC unroll 4
        for (int b = 0; b < GB; ++b) {
          vf xv = load(xc + b * kLanes);
          in_register(xv);
#pragma GCC unroll 8
          for (int kw = 0; kw < KW; ++kw) {
            const int q = i - kw;  // output column p reads input column p * S + kw
            if (q >= 0 && q % S == 0 && q / S < P) acc[q / S][b] += xv * wv[kw][b];
          }
        }
      }
      xc = next(xc, g.Gp);
    }
  }
  float* yc = y0 + lane0;
  for (int p = 0; p < P; ++p) {
    if (EDGE && p >= np) break;
    for (int b = 0; b < GB; ++b) store_result(yc + b * kLanes, acc[p][b], stream);
    yc = next(yc, ystep);
  }
}

// Columns per sliding block: the accumulators and kernel vectors fill the registers
// (all but 4 of AVX-512's 32, 2 of AVX2's 16), at most 16.
constexpr int slide_columns(int GB, int KW) {
  return std::min((kRegs - kRegs / 8 - KW * GB) / GB, 16);
}

// The input row that output row `row` = (n, od, oh) reads through kernel row (kd, kh),
// or null where that is padding or between the dilated input's rows; `pixel` is the
// floats per input pixel.
inline const float* input_row(const Geom& g, const float* x, int64_t row, int64_t kd,
                              int64_t kh, int64_t pixel) {
  const int64_t oh = row % g.OH, od = (row / g.OH) % g.OD, n = row / (g.OH * g.OD);
  const int64_t id = input_index(od, kd, g.sd, g.pd, g.rd, g.ld, g.D);
  const int64_t ih = input_index(oh, kh, g.sh, g.ph, g.rh, g.lh, g.H);
  return id < 0 || ih < 0 ? nullptr : x + ((n * g.D + id) * g.H + ih) * g.W * pixel;
}

// The taps of output row `row` that read the input (not the padding), KW per kernel row
// with kw = 0 first.
void row_taps(const Geom& g, const float* x, const float* w, int64_t row,
              std::vector<Tap>* taps, int64_t w_tap) {
  const int64_t CgGp = g.Cg * g.Gp;
  taps->clear();
  for (int64_t kd = 0; kd < g.KD; ++kd)
    for (int64_t kh = 0; kh < g.KH; ++kh) {
      const float* x_row = input_row(g, x, row, kd, kh, CgGp);
      if (x_row == nullptr) continue;
      for (int64_t kw = 0; kw < g.KW; ++kw)
        taps->push_back({x_row + kw * g.rw * CgGp,
                         w + ((kd * g.KH + kh) * g.KW + kw) * w_tap, kw});
    }
}

// One kernel tap's share of an output row in the kernel gradients: output columns
// o0, o0 + ostep, ... (count of them) read the input columns q0, q0 + istep, ... (x: the
// first one's pixel in the input row).
struct Span {
  const float* x;
  int64_t tap, q0, o0, count, ostep, istep;
};

// The output columns of any row that read the input through kernel column kw: with input
// dilation lw, output column ow reads dilated column ow * sw + kw * rw - pw, a real input
// when divisible by lw: every lw / gcd(sw, lw)-th column. Count 0 if none.
inline Span column_span(const Geom& g, int64_t kw) {
  const int64_t ostep = g.lw / std::gcd(g.sw, g.lw), istep = g.sw * ostep / g.lw;
  Span sp{nullptr, 0, 0, 0, 0, ostep, istep};
  const int64_t off = kw * g.rw - g.pw;  // dilated input column of output 0
  int64_t o0 = off >= 0 ? 0 : (-off + g.sw - 1) / g.sw;
  const int64_t o_end = std::min(g.OW, o0 + ostep);
  while (o0 < o_end && (o0 * g.sw + off) % g.lw) ++o0;
  if (o0 >= o_end) return sp;
  const int64_t q0 = (o0 * g.sw + off) / g.lw;
  if (q0 >= g.W) return sp;
  sp.q0 = q0;
  sp.o0 = o0;
  sp.count = std::min((g.OW - o0 + ostep - 1) / ostep, (g.W - q0 + istep - 1) / istep);
  return sp;
}

// For the kernel gradients: body(span) for each kernel tap through which output row `row`
// reads the input (taps in the padding or between the dilated input's values skipped);
// `pixel` is the floats per input pixel. (The depthwise kernel gradient keeps its own
// loops: as a lambda body, its sliding block lost a quarter of its speed.)
template <typename Body>
void kernel_tap_spans(const Geom& g, const float* x, int64_t row, int64_t pixel,
                      const Body& body) {
  for (int64_t kd = 0; kd < g.KD; ++kd)
    for (int64_t kh = 0; kh < g.KH; ++kh) {
      const float* x_row = input_row(g, x, row, kd, kh, pixel);
      if (x_row == nullptr) continue;
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        Span sp = column_span(g, kw);
        if (sp.count == 0) continue;
        sp.x = x_row + sp.q0 * pixel;
        sp.tap = (kd * g.KH + kh) * g.KW + kw;
        body(sp);
      }
    }
}

// Output columns [lo, hi) whose taps all read the input (none the padding), for stride
// sw without input dilation.
inline void inside_columns(const Geom& g, int64_t* lo, int64_t* hi) {
  *lo = std::min<int64_t>(g.OW, g.pw > 0 ? (g.pw + g.sw - 1) / g.sw : 0);
  const int64_t last = g.W - 1 + g.pw - (g.KW - 1) * g.rw;  // largest ow * sw
  *hi = last < 0 ? 0 : std::min<int64_t>(g.OW, last / g.sw + 1);
  if (*hi < *lo) *hi = *lo;
}

// Depthwise rows by sliding blocks (and the phases of input-dilated rows) run a block of
// output columns for every vector of groups (`chunks` runs of GB vectors) before the next
// columns, so that the input is read in memory order: one run of vectors across the whole
// row would read one cache line per pixel, a pixel apart. The loop waits on memory, not
// on arithmetic (on MobileNetV2's 28x28 3x3 layer, 7x the multiply-adds' time), so while
// a row is computed, the input rows that the next output row adds (`fresh_rows`) are
// prefetched into L2, a few lines before each run of vectors: each block's own columns
// of them. Prefetches issued all at once (every line of a block's columns before its
// first run, 100-300 of them) gained nothing. (Measured on the Zen 3 in one process with
// warm caches, NOTES.md section 19: MobileNetV2's 56x56x144 forward 2.9-4.2 -> 1.4-2.2
// ms, its 112x112x96 stride-2 one 5.6-6.7 -> 3.8-4.7.)

// The input rows that output row `row + 1` reads and `row` does not (`taps`: row's),
// for depthwise inputs (Gp floats a pixel). Distinct kernel rows read distinct rows.
void fresh_rows(const Geom& g, const float* x, int64_t row, const std::vector<Tap>& taps,
                std::vector<const float*>* rows) {
  rows->clear();
  if (row + 1 >= g.N * g.OD * g.OH) return;
  for (int64_t kd = 0; kd < g.KD; ++kd)
    for (int64_t kh = 0; kh < g.KH; ++kh) {
      const float* r = input_row(g, x, row + 1, kd, kh, g.Gp);
      bool read = r == nullptr;
      for (size_t t = 0; t < taps.size() && !read; t += g.KW) read = taps[t].x == r;
      if (!read) rows->push_back(r);
    }
}

// One block of P output columns (from y0, ystep floats apart; input columns from
// `first`, S apart) for every run of vectors, the first `np` columns stored; `inside`:
// no column reads outside the input row. Before each run, its lines of input columns
// [first, first + P * S) of the `fresh` rows go to L2.
template <int P, int GB, int KW, int S>
void slide_chunks(const Geom& g, const std::vector<Tap>& taps,
                  const std::vector<const float*>& fresh, float* y0, int64_t ystep,
                  int64_t first, int64_t kw0, int64_t kwstep, int64_t chunks, int64_t np,
                  bool inside, bool stream) {
  constexpr int64_t kLine = 64 / sizeof(float), kRun = GB * kLanes;
  const int64_t q0 = std::max<int64_t>(first, 0), q1 = std::min<int64_t>(first + P * S, g.W);
  for (int64_t c = 0; c < chunks; ++c) {
    for (const float* r : fresh)  // each line once: the runs of half a line skip every other
      for (int64_t q = q0; q < q1; ++q)
        for (int64_t l = (c * kRun + kLine - 1) / kLine * kLine; l < (c + 1) * kRun; l += kLine)
          __builtin_prefetch(r + q * g.Gp + l, 0, 2);
    if (inside)
      depthwise_slide<P, GB, KW, S, false>(g, taps, y0, ystep, first, kw0, kwstep, c * GB, P, stream);
    else
      depthwise_slide<P, GB, KW, S, true>(g, taps, y0, ystep, first, kw0, kwstep, c * GB, np, stream);
  }
}

// One phase of an input-dilated depthwise row (stride 1, no kernel dilation): outputs
// r, r + lw, ... read consecutive undilated input columns from `first` through kernel
// columns kw0, kw0 + lw, ... (KW of them): a stride-1 sliding block on every lw-th
// output.
template <int GB, int KW>
void depthwise_phase(const Geom& g, const std::vector<Tap>& taps, float* y_row, int64_t r,
                     int64_t first, int64_t kw0, int64_t chunks, bool stream) {
  constexpr int P = slide_columns(GB, KW);
  const int64_t count = (g.OW - r + g.lw - 1) / g.lw;
  for (int64_t j0 = 0; j0 < count; j0 += P) {
    const int64_t np = std::min<int64_t>(P, count - j0), in0 = first + j0;
    const bool inside = np == P && in0 >= 0 && in0 + P - 1 + KW - 1 < g.W;
    slide_chunks<P, GB, KW, 1>(g, taps, {}, y_row + (r + j0 * g.lw) * g.Gp, g.lw * g.Gp, in0,
                               kw0, g.lw, chunks, np, inside, stream);
  }
}

template <int GB>
void depthwise_phases(const Geom& g, const std::vector<Tap>& taps, float* y_row, int64_t chunks,
                      bool stream) {
  for (int64_t r = 0; r < std::min(g.lw, g.OW); ++r) {
    int64_t kw0 = 0;  // the first kernel column reaching a real input: (r + kw0 - pw) % lw == 0
    while (kw0 < g.KW && ((r + kw0 - g.pw) % g.lw + g.lw) % g.lw != 0) ++kw0;
    if (kw0 >= g.KW) {  // this phase only reads inserted zeros
      for (int64_t ow = r; ow < g.OW; ow += g.lw)
        std::fill(y_row + ow * g.Gp, y_row + (ow + 1) * g.Gp, 0.0f);
      continue;
    }
    const int64_t width = (g.KW - 1 - kw0) / g.lw + 1, first = (r + kw0 - g.pw) / g.lw;
    if (width == 1) depthwise_phase<GB, 1>(g, taps, y_row, r, first, kw0, chunks, stream);
    if (width == 2) depthwise_phase<GB, 2>(g, taps, y_row, r, first, kw0, chunks, stream);
    if constexpr (GB <= 2) {
      if (width == 3) depthwise_phase<GB, 3>(g, taps, y_row, r, first, kw0, chunks, stream);
      if (width == 4) depthwise_phase<GB, 4>(g, taps, y_row, r, first, kw0, chunks, stream);
    }
  }
}

// Depthwise: one output row, `chunks` runs of GB vectors of groups. With a sliding block
// (KW > 0), blocks of P columns, checked ones (EDGE) where some read the padding; with
// KW < 0, the phases of an input-dilated row. Otherwise (KW == 0: kernel dilation, other
// widths or strides) every column takes the general block, P at a time.
template <int P, int GB, int KW, int S>
void depthwise_row(const Geom& g, const std::vector<Tap>& taps,
                   const std::vector<const float*>& fresh, const float* zeros, float* y_row,
                   int64_t chunks, bool stream) {
  if (taps.empty()) {
    std::fill(y_row, y_row + g.OW * g.Gp, 0.0f);
    return;
  }
  if (KW == 0) {
    for (int64_t c = 0; c < chunks; ++c)
      for (int64_t ow = 0; ow < g.OW; ow += P) forward_block<P, 1, GB>(g, taps, zeros, y_row, ow, 0, c * GB);
    return;
  }
  if (KW < 0) return depthwise_phases<GB>(g, taps, y_row, chunks, stream);
  constexpr int K = KW > 0 ? KW : 1;
  int64_t lo = 0, hi = 0;
  inside_columns(g, &lo, &hi);
  for (int64_t ow = 0; ow < g.OW; ow += P) {
    const int64_t np = std::min<int64_t>(P, g.OW - ow), first = ow * S - g.pw;
    slide_chunks<P, GB, K, S>(g, taps, fresh, y_row + ow * g.Gp, g.Gp, first, 0, 1, chunks, np,
                              ow >= lo && ow + P <= hi, stream);
  }
}

template <int GB, int KW, int S, typename Pool>
void depthwise_all(Pool& pool, const Geom& g, const float* x, const float* w, float* y) {
  constexpr int P = KW > 0 ? slide_columns(GB, KW) : 8 / (GB < 3 ? GB : 2);
  std::vector<float> zeros(g.Gp, 0.0f);
  const int64_t chunks = g.Gp / kLanes / GB, row_size = g.OW * g.Gp, rows = g.N * g.OD * g.OH;
  // An output larger than the caches goes to memory with streaming stores (measured on
  // MobileNetV2's 56x56x144 layer, NOTES.md section 14).
  const bool stream = KW && rows * row_size * sizeof(float) > kStreamBytes &&
                      reinterpret_cast<uintptr_t>(y) % 64 == 0;
  parallel_rows(pool, rows, [&](int64_t row) {
    std::vector<Tap> taps;
    std::vector<const float*> fresh;
    row_taps(g, x, w, row, &taps, g.Cg * g.M * g.Gp);
    if (KW > 0) fresh_rows(g, x, row, taps, &fresh);
    depthwise_row<P, GB, KW, S>(g, taps, fresh, zeros.data(), y + row * row_size, chunks, stream);
    if (stream) stream_fence();
  });
}

// Picks the sliding block for kernel widths 3, 5, 7 and strides 1, 2 without dilation,
// or the phases of an input-dilated row (stride 1, at most 4 kernel columns a phase, 2
// with 3-4 vectors per block).
template <int GB, typename Pool>
void depthwise_width(Pool& pool, const Geom& g, const float* x, const float* w, float* y) {
  if (g.lw > 1 && g.sw == 1 && g.rw == 1 && (g.KW + g.lw - 1) / g.lw <= (GB <= 2 ? 4 : 2))
    return depthwise_all<GB, -1, 1>(pool, g, x, w, y);
  const bool plain = g.lw == 1 && g.rw == 1 && (g.sw == 1 || g.sw == 2);
  const int64_t kw = plain ? g.KW : 0;
  if (kw == 3 && g.sw == 1) return depthwise_all<GB, 3, 1>(pool, g, x, w, y);
  if (kw == 3) return depthwise_all<GB, 3, 2>(pool, g, x, w, y);
  // wider sliding blocks hold at most 2 vectors' kernels (where the registers allow)
  if constexpr (GB <= 2 && slide_columns(GB, 5) >= 1) {
    if (kw == 5 && g.sw == 1) return depthwise_all<GB, 5, 1>(pool, g, x, w, y);
    if (kw == 5) return depthwise_all<GB, 5, 2>(pool, g, x, w, y);
  }
  if constexpr (GB <= 2 && slide_columns(GB, 7) >= 1) {
    if (kw == 7 && g.sw == 1) return depthwise_all<GB, 7, 1>(pool, g, x, w, y);
    if (kw == 7) return depthwise_all<GB, 7, 2>(pool, g, x, w, y);
  }
  depthwise_all<GB, 0, 1>(pool, g, x, w, y);
}

// Grouped (several channels per group): keep one vector's kernel slice hot, sweep columns.
template <int P, int MB, int GB>
void grouped_row(const Geom& g, const std::vector<Tap>& taps, const float* zeros,
                 float* y_row) {
  if (taps.empty()) {
    std::fill(y_row, y_row + g.OW * g.M * g.Gp, 0.0f);
    return;
  }
  for (int64_t gv0 = 0; gv0 < g.Gp / kLanes; gv0 += GB)
    for (int64_t m0 = 0; m0 < g.M; m0 += MB)
      for (int64_t ow = 0; ow < g.OW; ow += P)
        forward_block<P, MB, GB>(g, taps, zeros, y_row, ow, m0, gv0);
}

template <int P, int MB, int GB, typename Pool>
void forward_all(Pool& pool, const Geom& g, const float* x, const float* w, float* y) {
  std::vector<float> zeros(g.Cg * g.Gp, 0.0f);
  const int64_t row_size = g.OW * g.M * g.Gp;
  parallel_rows(pool, g.N * g.OD * g.OH, [&](int64_t row) {
    std::vector<Tap> taps;
    row_taps(g, x, w, row, &taps, g.Cg * g.M * g.Gp);
    grouped_row<P, MB, GB>(g, taps, zeros.data(), y + row * row_size);
  });
}

// ----------------------------------------------------------------------------------
// Grouped with whole vectors of output channels per group (M % 8 == 0), on the operands
// as they come, channels last with each group's channels contiguous:
//
//   x  (N, D, H, W, G * Cg)   w  (G, KD, KH, KW, Cg, M)   y  (N, OD, OH, OW, G * M)
//
// with the forward's kernel packed in panels of L output channels,
// w (G, M / L, KD, KH, KW, Cg, L), so that a block's kernel vectors are consecutive in
// memory (with rows M floats apart, 512-1024 bytes for 128-256 channels, successive
// input channels' vectors fall in a few L1 sets; NOTES.md section 21).
//
// (Geom's Gp is G here; the kernel gradient comes back as (KD, KH, KW, Cg, G * M).) The
// kernel is group-major so that a group's vectors are contiguous: with the groups'
// channels interleaved, they would sit a power of two apart, in the same few L1 sets. A vector holds L = 8 or 16 output channels of one group and each
// input value is broadcast to them, so no operand is transposed on the way in or out.

template <int L>
struct VecOf;
template <>
struct VecOf<8> {
  typedef float type __attribute__((vector_size(32)));
};
template <>
struct VecOf<16> {
  typedef float type __attribute__((vector_size(64)));
};
// L channels in registers: NV vectors of at most kLanes floats (16 channels are two
// vectors on AVX2, where GCC lowers a 64-byte vector type to code 3-6x slower).
template <int L>
struct Chans {
  static constexpr int VL = L < kLanes ? L : kLanes, NV = L / VL;
  typedef typename VecOf<VL>::type V;
};


// P output columns ow0, ow0 + ostep, ... x L output channels of group `grp` (from m0),
// input channels CB at a time with their kernel vectors in registers; the first `np`
// columns are stored. The columns are of one phase (with input dilation lw, ostep =
// lw / gcd(sw, lw)): a tap reads the input for all of them or for none, and consecutive
// columns read input columns istep = sw * ostep / lw apart. EDGE: columns whose input
// column lies outside the input (or beyond np) are skipped. `stream`: results go
// to memory with streaming stores.
template <int L, int P, int CB, bool EDGE>
void nhwc_block(const Geom& g, const std::vector<Tap>& taps, float* y_row, int64_t ow0,
                int64_t np, int64_t ostep, int64_t grp, int64_t m0, bool stream) {
  using V = typename Chans<L>::V;
  constexpr int VL = Chans<L>::VL, NV = Chans<L>::NV;
  const int64_t C = g.Cg * g.Gp, O = g.M * g.Gp;  // pixel strides of x and y
  const int64_t istep = g.sw * ostep / g.lw;
  V acc[P][NV];
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < NV; ++v) acc[p][v] = V{};
  const int64_t first = ow0 * g.sw - g.pw;
  for (const Tap& t : taps) {
    const float* row = t.x - t.kw * g.rw * C + grp * g.Cg;  // this group's channels
    int64_t q0 = first + t.kw * g.rw;                       // dilated input column of p = 0
    if (g.lw != 1) {
      if (q0 % g.lw) continue;  // a tap between the input's values for this phase
      q0 /= g.lw;
    }
    const float* wt = t.w + (grp * g.M + m0) * g.KD * g.KH * g.KW * g.Cg;  // the panel
    for (int64_t ci0 = 0; ci0 < g.Cg; ci0 += CB) {
      V wv[CB][NV];
      const float* wc = wt + ci0 * L;
      for (int c = 0; c < CB; ++c) {
        for (int v = 0; v < NV; ++v) wv[c][v] = loadv<V>(wc + v * VL);
        wc = next(wc, L);
      }
      const float* xc = row + q0 * C + ci0;
#pragma GCC unroll 32
      for (int p = 0; p < P; ++p) {
        if (!EDGE || (p < np && static_cast<uint64_t>(q0 + p * istep) < static_cast<uint64_t>(g.W))) {
#pragma GCC unroll 16
          for (int c = 0; c < CB; ++c)
            for (int v = 0; v < NV; ++v) acc[p][v] += xc[c] * wv[c][v];
        }
        xc = next(xc, istep * C);
      }
    }
  }
  float* yc = y_row + ow0 * O + grp * g.M + m0;
  for (int p = 0; p < P; ++p) {
    if (EDGE && p >= np) break;
    for (int v = 0; v < NV; ++v) store_result(yc + v * VL, acc[p][v], stream);
    yc = next(yc, ostep * O);
  }
}

#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
constexpr bool kAvx2Block = true;
// nhwc_block for 6 columns x 16 channels on AVX2, written with intrinsics: the matmul
// micro-kernel's step (two kernel vectors, six broadcast input values, twelve
// multiply-adds in 15 of the 16 registers) one input channel at a time. GCC's code for
// the vector-extension loop above needs two input channels per step to keep its operands
// in registers (a step of one measured 2x slower, NOTES.md section 21); this is the step
// the standalone GEMM of that section ran at 126-142 GFLOP/s. Interior and edge blocks
// alike: a column whose input lies in the padding (or beyond np) reads `zeros` (Cg
// floats) instead, so every tap is the same loop. CB (which divides Cg): input channels
// per unrolled step (3 for RGB inputs: a tap's whole loop).
template <int CB, int P = 6>
void nhwc_block_avx2(const Geom& g, const std::vector<Tap>& taps, const float* zeros,
                     float* y_row, int64_t ow0, int64_t np, int64_t ostep, int64_t grp,
                     int64_t m0, bool stream) {
  const int64_t C = g.Cg * g.Gp, O = g.M * g.Gp;
  const int64_t istep = g.sw * ostep / g.lw;
  __m256 acc[P][2];
  for (int p = 0; p < P; ++p) acc[p][0] = acc[p][1] = _mm256_setzero_ps();
  const int64_t first = ow0 * g.sw - g.pw;
  const int64_t panel = (grp * g.M + m0) * g.KD * g.KH * g.KW * g.Cg;
  // acc += the `count` input channels from each column's xp through the kernel from wt
  auto accumulate = [&](const float* const(&xp)[P], const float* wt, int64_t count) {
    // the sums in locals for the loop: held in acc (captured by reference), GCC stored
    // every one of them to the stack after each multiply-add
    __m256 s[P][2];
    for (int p = 0; p < P; ++p) s[p][0] = acc[p][0], s[p][1] = acc[p][1];
#pragma GCC unroll 2
    for (int64_t ci0 = 0; ci0 < count; ci0 += CB) {
#pragma GCC unroll 16
      for (int c = 0; c < CB; ++c) {
        const int64_t ci = ci0 + c;
        const __m256 b0 = _mm256_loadu_ps(wt + ci * 16), b1 = _mm256_loadu_ps(wt + ci * 16 + 8);
#pragma GCC unroll 6
        for (int p = 0; p < P; ++p) {
          const __m256 a = _mm256_broadcast_ss(xp[p] + ci);
          s[p][0] = _mm256_fmadd_ps(a, b0, s[p][0]);
          s[p][1] = _mm256_fmadd_ps(a, b1, s[p][1]);
        }
      }
    }
    for (int p = 0; p < P; ++p) acc[p][0] = s[p][0], acc[p][1] = s[p][1];
  };
  // A dense kernel row whose taps all read the input for every column is one run of
  // KW * Cg channels: consecutive input pixels and kernel taps are contiguous (the
  // 7x7 RGB stem: 21 channels a run instead of 7 runs of 3).
  const int64_t last = first + (P - 1) * istep + g.KW - 1;  // the last column's last tap
  const bool whole_rows = g.Gp == 1 && g.rw == 1 && g.lw == 1 && np == P && first >= 0 &&
                          last < g.W;
  for (size_t i = 0; i < taps.size();) {
    const Tap& t = taps[i];
    const float* row = t.x - t.kw * g.rw * C + grp * g.Cg;
    if (whole_rows && t.kw == 0 && i + g.KW <= taps.size()) {
      const float* xp[P];
      for (int p = 0; p < P; ++p) xp[p] = row + (first + p * istep) * C;
      accumulate(xp, t.w + panel, g.KW * g.Cg);
      i += g.KW;
      continue;
    }
    ++i;
    int64_t q0 = first + t.kw * g.rw;
    if (g.lw != 1) {
      if (q0 % g.lw) continue;
      q0 /= g.lw;
    }
    const float* xp[P];
    bool any = false;
    for (int p = 0; p < P; ++p) {
      const int64_t q = q0 + p * istep;
      const bool in = p < np && static_cast<uint64_t>(q) < static_cast<uint64_t>(g.W);
      xp[p] = in ? row + q * C : zeros;
      any |= in;
    }
    if (any) accumulate(xp, t.w + panel, g.Cg);
  }
  float* yc = y_row + ow0 * O + grp * g.M + m0;
  for (int p = 0; p < P && p < np; ++p) {
    store_result(yc, acc[p][0], stream);
    store_result(yc + 8, acc[p][1], stream);
    yc = next(yc, ostep * O);
  }
}

// Grouped layers with 8 or 16 channels per group on AVX2, one group's image at a time
// (ResNeXt's 3x3 stages). In the operands' layout a group's input is 32-64 bytes per pixel,
// 1-2 KB apart: every pixel of the image in the same 2-4 sets of L1. Here each task copies
// its group's input, padding included, into a contiguous plane (H + pads) x (W + pads) x Cg,
// and computes every output of the group from it: no edge checks, and a kernel row read
// through by every column of a block is one run of KW * Cg channels. Blocks of R rows x P
// columns x L channels (12 sums: 2 x 6 x 8 or 1 x 6 x 16; 5 columns on rows where 6 would
// waste more), one kernel load and 12 broadcasts a step. Measured on the Zen 3 (NOTES.md
// section 23): ResNeXt's 28x28 forward 1.6x, its 14x14 one 1.2-1.35x; the same plane for
// the kernel gradient was slower than the rows' loop (0.8-0.9x) and is not used.

// buf = group grp's channels of image n, rows and columns from the low pads' (-ph, -pw):
// Hb x Wb pixels of CG floats, zeros outside the input.
template <int CG>
void pack_plane(const Geom& g, const float* x, int64_t n, int64_t grp, int64_t Hb, int64_t Wb,
                std::vector<float>* buf) {
  const int64_t C = CG * g.Gp;
  buf->assign(Hb * Wb * CG, 0.0f);
  for (int64_t r = 0; r < Hb; ++r) {
    const int64_t ih = r - g.ph;
    if (ih < 0 || ih >= g.H) continue;
    const float* xr = x + ((n * g.H + ih) * g.W) * C + grp * CG;
    float* br = buf->data() + r * Wb * CG;
    for (int64_t c = std::max<int64_t>(0, g.pw); c < Wb && c - g.pw < g.W; ++c)
      std::memcpy(br + c * CG, xr + (c - g.pw) * C, CG * sizeof(float));
  }
}

// The plane's rows and columns for blocks of R rows x P columns (the last blocks read
// past the output's edge, into zeros).
inline void plane_extent(const Geom& g, int64_t R, int64_t P, int64_t* Hb, int64_t* Wb) {
  const int64_t OHb = (g.OH + R - 1) / R * R, OWb = (g.OW + P - 1) / P * P;
  *Hb = (OHb - 1) * g.sh + (g.KH - 1) * g.rh + 1;
  *Wb = (OWb - 1) * g.sw + g.KW;
}

template <int L, int CG, int SW, int P>
void plane_group(const Geom& g, const float* x, const float* w, float* y, int64_t n,
                 int64_t grp, std::vector<float>* buf) {
  constexpr int R = L == 8 ? 2 : 1, NV = L / 8;
  const int64_t C = CG * g.Gp, O = g.M * g.Gp;
  int64_t Hb, Wb;
  plane_extent(g, R, P, &Hb, &Wb);
  pack_plane<CG>(g, x, n, grp, Hb, Wb, buf);
  const int64_t run = g.KW * CG;  // one kernel row, taps and channels
  for (int64_t m0 = 0; m0 < g.M; m0 += L) {
    const float* wp = w + (grp * g.M + m0) * g.KH * g.KW * CG;  // the panel
    for (int64_t oh0 = 0; oh0 < g.OH; oh0 += R)
      for (int64_t ow0 = 0; ow0 < g.OW; ow0 += P) {
        __m256 acc[R * P][NV];
        for (int i = 0; i < R * P; ++i)
          for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_setzero_ps();
        for (int64_t kh = 0; kh < g.KH; ++kh) {
          const float* xr[R];
          for (int r = 0; r < R; ++r)
            xr[r] = buf->data() + (((oh0 + r) * g.sh + kh * g.rh) * Wb + ow0 * SW) * CG;
          const float* wk = wp + kh * run * L;
#pragma GCC unroll 1
          for (int64_t k0 = 0; k0 < run; k0 += CG) {
#pragma GCC unroll 16
            for (int c = 0; c < CG; ++c) {
              const int64_t k = k0 + c;
              __m256 b[NV];
              for (int v = 0; v < NV; ++v) b[v] = _mm256_loadu_ps(wk + k * L + v * 8);
#pragma GCC unroll 12
              for (int i = 0; i < R * P; ++i) {  // R * P <= 12
                const __m256 a = _mm256_broadcast_ss(xr[i / P] + (i % P) * SW * CG + k);
                for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_fmadd_ps(a, b[v], acc[i][v]);
              }
            }
          }
        }
        for (int r = 0; r < R && oh0 + r < g.OH; ++r) {
          float* yr = y + ((n * g.OH + oh0 + r) * g.OW + ow0) * O + grp * g.M + m0;
          for (int p = 0; p < P && ow0 + p < g.OW; ++p)
            for (int v = 0; v < NV; ++v) _mm256_storeu_ps(yr + p * O + v * 8, acc[r * P + p][v]);
        }
      }
  }
}

// Whether plane_forward computes this layer: 2-D, no input dilation or kernel column
// dilation, stride 1-2 along the rows, 8 or 16 channels per group, a plane of at most
// 256 KB (half of the Zen 3's L2).
inline bool plane_applies(const Geom& g) {
  if (g.Gp < 2 || g.D != 1 || g.OD != 1 || g.KD != 1 || g.lh != 1 || g.lw != 1 || g.rw != 1)
    return false;
  if (!(g.Cg == 8 || g.Cg == 16) || g.M % 8 || !(g.sw == 1 || g.sw == 2)) return false;
  int64_t Hb, Wb;
  plane_extent(g, 2, 6, &Hb, &Wb);  // the largest blocks plane_forward takes
  return Hb * Wb * g.Cg * sizeof(float) <= (256 << 10);
}

// One task per image and pair of groups (the two halves of each 64-byte output line
// written by one thread).
template <typename Pool>
void plane_forward(Pool& pool, const Geom& g, const float* x, const float* w, float* y) {
  // 5 columns a block where 6 would compute 10% more columns than 5 (14-column rows: 18
  // against 15)
  const bool five = (g.OW + 4) / 5 * 5 * 10 < (g.OW + 5) / 6 * 6 * 9;
  auto with_shape = [&](auto l, auto cg, auto sw) {
    constexpr int L = decltype(l)::value, CG = decltype(cg)::value, SW = decltype(sw)::value;
    const int64_t per = g.Gp % 2 ? 1 : 2, units = g.N * (g.Gp / per);
    parallel_for(pool, units, [&](int64_t u) {
      thread_local std::vector<float> buf;
      const int64_t n = u / (g.Gp / per), grp0 = u % (g.Gp / per) * per;
      for (int64_t grp = grp0; grp < grp0 + per; ++grp) {
        if (five)
          plane_group<L, CG, SW, 5>(g, x, w, y, n, grp, &buf);
        else
          plane_group<L, CG, SW, 6>(g, x, w, y, n, grp, &buf);
      }
    });
  };
  using I8 = std::integral_constant<int, 8>;
  using I16 = std::integral_constant<int, 16>;
  using S1 = std::integral_constant<int, 1>;
  using S2 = std::integral_constant<int, 2>;
  auto with_cg = [&](auto l) {
    if (g.Cg == 8) {
      if (g.sw == 1) return with_shape(l, I8(), S1());
      return with_shape(l, I8(), S2());
    }
    if (g.sw == 1) return with_shape(l, I16(), S1());
    with_shape(l, I16(), S2());
  };
  if (g.M % 16 == 0) return with_cg(I16());
  with_cg(I8());
}
#else
constexpr bool kAvx2Block = false;
template <int CB, int P = 6>
void nhwc_block_avx2(const Geom&, const std::vector<Tap>&, const float*, float*, int64_t,
                     int64_t, int64_t, int64_t, int64_t, bool) {}
inline bool plane_applies(const Geom&) { return false; }
template <typename Pool>
void plane_forward(Pool&, const Geom&, const float*, const float*, float*) {}
#endif

// Block bi of a phase's `count` output columns, [*c0, *c0 + *np); false past the last.
// Blocks of P columns; with EVEN (the AVX2 block) a remainder of at most P / 2 columns
// shares the last two blocks evenly: 32 columns as 6, 6, 6, 6, 4, 4, not 6, 6, 6, 6, 6, 2
// (the 2-column block's 4 sums are too few chains to keep both FMA units busy).
template <int P, bool EVEN>
inline bool column_block(int64_t count, int64_t bi, int64_t* c0, int64_t* np) {
  const int64_t full = count / P, rest = count % P;
  if (!EVEN || rest == 0 || rest > P / 2 || full == 0 || bi < full - 1) {
    *c0 = bi * P;
    *np = std::min<int64_t>(count - *c0, P);
    return *c0 < count;
  }
  if (bi > full) return false;
  const int64_t first = (P + rest + 1) / 2;  // the last two blocks: first, then the rest
  *c0 = (full - 1) * P + (bi == full ? first : 0);
  *np = bi == full ? P + rest - first : first;
  return true;
}

// Calls f(std::integral_constant<int, n>()) for 1 <= n <= MAX.
template <int MAX, typename F>
void with_columns(int64_t n, const F& f) {
  if constexpr (MAX > 1)
    if (n < MAX) return with_columns<MAX - 1>(n, f);
  f(std::integral_constant<int, MAX>());
}

// Narrow rows (one phase: no input dilation, or one whose columns all read the input):
// the block's pixels are `nrows` whole output rows from row0 (P / OW of them), so that
// each kernel vector feeds up to P multiply-adds instead of OW (C3D conv5a's 7-wide rows:
// 7 of a 16-column block's). Pixels whose input lies in the padding are skipped, as in
// nhwc_block's EDGE.
template <int L, int P, int CB>
void nhwc_rows_block(const Geom& g, const float* x, const float* w, float* y, int64_t row0,
                     int64_t nrows, int64_t grp, int64_t m0, bool stream) {
  using V = typename Chans<L>::V;
  constexpr int VL = Chans<L>::VL, NV = Chans<L>::NV;
  const int64_t C = g.Cg * g.Gp, O = g.M * g.Gp, np = nrows * g.OW;
  V acc[P][NV];
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < NV; ++v) acc[p][v] = V{};
  const float* xr[P];  // per block row: the input row of the kernel row, or null
  const float* xp[P];  // per pixel: its input pixel (this group's channels) for the tap
  bool ok[P];
  const float* wg = w + (grp * g.M + m0) * g.KD * g.KH * g.KW * g.Cg;  // the panel
  for (int64_t kd = 0; kd < g.KD; ++kd)
    for (int64_t kh = 0; kh < g.KH; ++kh) {
      bool any_row = false;
      for (int64_t i = 0; i < nrows; ++i) {
        xr[i] = input_row(g, x, row0 + i, kd, kh, C);
        any_row |= xr[i] != nullptr;
      }
      if (!any_row) continue;
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        bool any = false;
        for (int p = 0; p < P; ++p) {
          const int64_t q = p < np ? input_index(p % g.OW, kw, g.sw, g.pw, g.rw, g.lw, g.W) : -1;
          ok[p] = q >= 0 && xr[p / g.OW] != nullptr;
          xp[p] = ok[p] ? xr[p / g.OW] + q * C + grp * g.Cg : nullptr;
          any |= ok[p];
        }
        if (!any) continue;
        const float* wt = wg + ((kd * g.KH + kh) * g.KW + kw) * g.Cg * L;
        for (int64_t ci0 = 0; ci0 < g.Cg; ci0 += CB) {
          V wv[CB][NV];
          for (int c = 0; c < CB; ++c)
            for (int v = 0; v < NV; ++v) wv[c][v] = loadv<V>(wt + (ci0 + c) * L + v * VL);
#pragma GCC unroll 32
          for (int p = 0; p < P; ++p)
            if (ok[p]) {
              const float* xc = xp[p] + ci0;
#pragma GCC unroll 16
              for (int c = 0; c < CB; ++c)
                for (int v = 0; v < NV; ++v) acc[p][v] += xc[c] * wv[c][v];
            }
        }
      }
    }
  float* yc = y + row0 * g.OW * O + grp * g.M + m0;  // the rows' pixels are contiguous
  for (int p = 0; p < std::min<int64_t>(P, np); ++p)
    for (int v = 0; v < NV; ++v) store_result(yc + p * O + v * VL, acc[p][v], stream);
}

// Input channels per step in the channels-last forward (kernel vectors in registers,
// see kNhwcColumns): with 16 registers and 16 channels (two registers a vector) two, one
// register short (measured 1.1-1.9x faster than one step, NOTES.md section 17); the
// AVX2 intrinsics block (nhwc_block_avx2) unrolls up to 4, or 3 for RGB inputs. In
// nhwc_rows_block, at most 2 of 16 channels with 16 registers.
template <int L>
constexpr int kNhwcStep = kRegs >= 32 || L == 8 ? 8 : kAvx2Block ? 4 : 2;
template <int L, int CB>
constexpr int kRowsStep = kRegs >= 32 || L == 8 || CB <= 2 ? CB : CB % 2 ? 1 : 2;

// Columns per channels-last forward block: P accumulators of L channels, CB kernel vectors
// and a broadcast input value in the registers (AVX-512: 16 + 8 + 1 of 32; AVX2: 6 x 2 +
// 2 x 2 + 1 or 6 + 8 + 1 of 16, about the 6 x 16 block of a matmul's micro-kernel).
constexpr int kNhwcColumns = kRegs >= 32 ? 16 : 6;

template <int L, int CB, typename Pool>
void nhwc_forward_all(Pool& pool, const Geom& g, const float* x, const float* w, float* y) {
  constexpr int P = kNhwcColumns;
  const int64_t O = g.M * g.Gp, row_size = g.OW * O;
  const int64_t ostep = g.lw / std::gcd(g.sw, g.lw);
  int64_t lo = 0, hi = 0;
  if (g.lw == 1) inside_columns(g, &lo, &hi);
  const int64_t rows = g.N * g.OD * g.OH;
  const bool stream = L == 16 && rows * row_size * sizeof(float) > kStreamBytes &&
                      reinterpret_cast<uintptr_t>(y) % 64 == 0;
  const int64_t per_group = g.M / L, vectors = g.Gp * per_group;
  const std::vector<float> zeros(kAvx2Block ? g.Cg : 0, 0.0f);
  // body(grp, m_lo, m_hi) for each group with output vectors (L channels of one group
  // each) among [v0, v1): its output channels [m_lo, m_hi)
  auto groups = [&](int64_t v0, int64_t v1, const auto& body) {
    for (int64_t grp = v0 / per_group; grp * per_group < v1; ++grp)
      body(grp, std::max<int64_t>(v0 - grp * per_group, 0) * L,
           std::min<int64_t>(v1 - grp * per_group, per_group) * L);
  };
  // Output vectors [v0, v1) of one row: per group, P columns of each phase (one phase
  // without input dilation) at a time, all the group's vectors before the next columns,
  // so that their inputs and outputs stay in cache.
  auto row_vectors = [&](int64_t row, const std::vector<Tap>& taps, int64_t v0, int64_t v1) {
    float* y_row = y + row * row_size;
    const int64_t phases = std::min(ostep, g.OW);
    groups(v0, v1, [&](int64_t grp, int64_t m_lo, int64_t m_hi) {
      for (int64_t bi = 0, any = 1; any; ++bi) {
        any = 0;
        for (int64_t r = 0; r < phases; ++r) {
          int64_t c0, np;  // the block's columns of this phase
          if (!column_block<P, kAvx2Block && L == 16>((g.OW - r + ostep - 1) / ostep, bi, &c0, &np))
            continue;
          any = 1;
          const int64_t ow = r + c0 * ostep;
          for (int64_t m0 = m_lo; m0 < m_hi; m0 += L) {
            if constexpr (kAvx2Block && L == 16 && P == 6)
              with_columns<P>(np, [&](auto pc) {  // a row's last columns: a block of as many
                nhwc_block_avx2<CB, decltype(pc)::value>(g, taps, zeros.data(), y_row, ow, np,
                                                         ostep, grp, m0, stream);
              });
            else if (ostep == 1 && ow >= lo && ow + P <= hi)
              nhwc_block<L, P, CB, false>(g, taps, y_row, ow, P, 1, grp, m0, stream);
            else
              nhwc_block<L, P, CB, true>(g, taps, y_row, ow, np, ostep, grp, m0, stream);
          }
        }
      }
    });
  };
  // Rows per unit of work: R whole rows per block where rows are narrow and a vector's
  // kernel slice is large (nhwc_rows_block), else one row, its columns in blocks.
  const int64_t vector_bytes = g.KD * g.KH * g.KW * g.Cg * L * sizeof(float);
  const bool narrow = ostep == 1 && 2 * g.OW <= P && vector_bytes > kRowsBlockBytes;
  const int64_t R = narrow ? P / g.OW : 1, units = (rows + R - 1) / R;
  auto unit_vectors = [&](int64_t unit, std::vector<Tap>* taps, int64_t v0, int64_t v1) {
    if (R == 1) {
      row_taps(g, x, w, unit, taps, g.Cg * L);
      return row_vectors(unit, *taps, v0, v1);
    }
    const int64_t row0 = unit * R, nrows = std::min(R, rows - row0);
    groups(v0, v1, [&](int64_t grp, int64_t m_lo, int64_t m_hi) {
      for (int64_t m0 = m_lo; m0 < m_hi; m0 += L)
        nhwc_rows_block<L, P, kRowsStep<L, CB>>(g, x, w, y, row0, nrows, grp, m0, stream);
    });
  };
  if (vectors * vector_bytes > kKernelRunsBytes) {
    // Runs of output vectors whose kernel slices fit in half of L2, each over a run of
    // rows: each row would otherwise read the whole kernel (C3D's 27 x 512 x 512: 28 MB)
    // from memory. (Measured slower for kernels that L3 holds: ResNet-50's 4-9 MB.)
    const int64_t run = std::clamp<int64_t>(kSplitResultBytes / vector_bytes, 1, vectors);
    const int64_t vruns = (vectors + run - 1) / run;
    const int64_t rruns = std::clamp<int64_t>((8 * pool.num_threads() + vruns - 1) / vruns, 1, units);
    const int64_t rrun = (units + rruns - 1) / rruns;
    parallel_for(pool, vruns * rruns, [&](int64_t i) {
      const int64_t v0 = (i % vruns) * run, u0 = (i / vruns) * rrun;
      std::vector<Tap> taps;
      for (int64_t unit = u0; unit < std::min(units, u0 + rrun); ++unit)
        unit_vectors(unit, &taps, v0, std::min(vectors, v0 + run));
      if (stream) stream_fence();
    });
    return;
  }
  parallel_rows(pool, units, [&](int64_t unit) {
    std::vector<Tap> taps;
    unit_vectors(unit, &taps, 0, vectors);
    if (stream) stream_fence();
  });
}

// Calls f(std::integral_constant<int, CB>()) with the input channels taken per step: the
// largest of 16, 8, 4, 2 that divides Cg and is at most MAX, else 3 where it divides Cg
// (RGB inputs: the three channels of a pixel at once), else 1.
template <int MAX, typename F>
void with_channel_step(int64_t Cg, const F& f) {
  if constexpr (MAX >= 16) if (Cg % 16 == 0) return f(std::integral_constant<int, 16>());
  if constexpr (MAX >= 8) if (Cg % 8 == 0) return f(std::integral_constant<int, 8>());
  if constexpr (MAX >= 4) if (Cg % 4 == 0) return f(std::integral_constant<int, 4>());
  if constexpr (MAX >= 2) if (Cg % 2 == 0) return f(std::integral_constant<int, 2>());
  if constexpr (MAX >= 3) if (Cg % 3 == 0) return f(std::integral_constant<int, 3>());
  f(std::integral_constant<int, 1>());
}

template <int L, typename Pool>
void nhwc_forward_cb(Pool& pool, const Geom& g, const float* x, const float* w, float* y) {
  with_channel_step<kNhwcStep<L>>(g.Cg, [&](auto cb) {
    nhwc_forward_all<L, decltype(cb)::value>(pool, g, x, w, y);
  });
}

// acc[c] += x[c] * d over a span's columns: x and d (a vector of L cotangents) advance
// xstep and dstep floats a column. Shared by both channels-last kernel gradients.
template <int L, int CB, typename V = typename Chans<L>::V, int NV = Chans<L>::NV>
__attribute__((always_inline)) inline void span_sums(V (&acc)[CB][NV], const float* xc,
                                                     const float* dc, int64_t count,
                                                     int64_t xstep, int64_t dstep) {
  for (int64_t k = 0; k < count; ++k) {
    V d[NV];
    for (int v = 0; v < NV; ++v) d[v] = loadv<V>(dc + v * Chans<L>::VL);
#pragma GCC unroll 16
    for (int c = 0; c < CB; ++c)
      for (int v = 0; v < NV; ++v) acc[c][v] += xc[c] * d[v];
    xc = next(xc, xstep);
    dc = next(dc, dstep);
  }
}

// Calls f(std::integral_constant<int, B>(), ci0) for the input channels [ci0, ci0 + B) of
// [0, Cg) in blocks of B, then once with the B' < B left over (where B does not divide
// Cg).
template <int B, typename F>
void channel_blocks(int64_t Cg, const F& f) {
  int64_t ci0 = 0;
  for (; ci0 + B <= Cg; ci0 += B) f(std::integral_constant<int, B>(), ci0);
  if constexpr (B > 1)
    if (ci0 < Cg) {
      if (Cg - ci0 == B - 1) return f(std::integral_constant<int, B - 1>(), ci0);
      channel_blocks<B - 1>(Cg - ci0, [&](auto cb, int64_t c) { f(cb, ci0 + c); });
    }
}

// Input channels per block of the channels-last kernel gradient: CB (which divides Cg),
// or 6 on AVX2 with 16 channels (12 sums, the forward's 6 x 16 block; 1.4-1.7x faster
// than 4, NOTES.md section 22).
template <int L, int CB>
constexpr int kKgradBlock = kAvx2Block && L == 16 ? 6 : CB;

// Kernel gradient on the same layouts: dw[tap, ci, grp * M + m] = sum over output
// positions of x[input position, grp * Cg + ci] * dy[position, grp * M + m].
template <int L, int CB>
void nhwc_kgrad_row(const Geom& g, const float* x, const float* dy, float* dw, int64_t row) {
  using V = typename Chans<L>::V;
  constexpr int VL = Chans<L>::VL, NV = Chans<L>::NV;
  const int64_t C = g.Cg * g.Gp, O = g.M * g.Gp;
  const float* dy_row = dy + row * g.OW * O;
  // the span in tiles of columns that stay in L2 while every block sums over them (a
  // WaveNet row, 16000 columns of 64 + 64 channels, is 8 MB: untiled, each of its 64
  // blocks read the whole row from memory)
  const int64_t tile = std::max<int64_t>(32, kKgradTileBytes / ((C + O) * sizeof(float)));
  kernel_tap_spans(g, x, row, C, [&](const Span& sp) {
    float* dw_tap = dw + sp.tap * g.Cg * O;
    for (int64_t k0 = 0; k0 < sp.count; k0 += tile) {
      const float* x0 = sp.x + k0 * sp.istep * C;
      const float* d0 = dy_row + (sp.o0 + k0 * sp.ostep) * O;
      const int64_t count = std::min(tile, sp.count - k0);
      for (int64_t grp = 0; grp < g.Gp; ++grp)
        for (int64_t m0 = 0; m0 < g.M; m0 += L)
          channel_blocks<kKgradBlock<L, CB>>(g.Cg, [&](auto cb, int64_t ci0) {
            constexpr int B = decltype(cb)::value;
            V acc[B][NV] = {};
            span_sums<L, B>(acc, x0 + grp * g.Cg + ci0, d0 + grp * g.M + m0, count,
                            sp.istep * C, sp.ostep * O);
            float* out = dw_tap + ci0 * O + grp * g.M + m0;
            for (int c = 0; c < B; ++c)
              for (int v = 0; v < NV; ++v) {
                float* o = out + c * O + v * VL;
                storev(o, loadv<V>(o) + acc[c][v]);
              }
          });
    }
  });
}

// The geometry attribute, checked for the layout: whole vectors of groups (Gp % kLanes) or
// of a group's output channels (channels last, M % 8).
bool read_geom(ffi::Span<const int64_t> attr, Geom* g, bool channels_last) {
  if (attr.size() != kGeomSize) return false;
  std::memcpy(g, attr.begin(), sizeof(Geom));
  return channels_last ? g->M % 8 == 0 : g->Gp % kLanes == 0;
}

// Depthwise with a wide kernel (stride 1, no dilation, more than 7 columns: RepLKNet's
// 31x31; 7 on narrow rows), one vector of groups at a time. In the lanes layout a vector's kernel taps
// and input pixels sit Gp floats apart (2 KB for 512 groups): all in two of L1's sets
// and a few of L2's, so every tap's kernel vector came from L3. Here a task gathers its
// vector's kernel (KD*KH*KW*16 floats) and, per image, its input (D*H*W*16 floats)
// into contiguous buffers, so the kernel row in use stays in L1 and the whole slice in
// L2 (`wide_row` computes on them). Larger images keep the general block.
constexpr int64_t kWideSlabBytes = 512 << 10;

inline bool depthwise_wide_applies(const Geom& g) {
  const bool plain = g.sd == 1 && g.sh == 1 && g.sw == 1 && g.rd == 1 && g.rh == 1 &&
                     g.rw == 1 && g.ld == 1 && g.lh == 1 && g.lw == 1;
  const int64_t slab = std::max(g.D * g.H * g.W, g.KD * g.KH * g.KW) * kLanes * 4;
  // 7 columns where output rows are at most 14 wide (ConvNeXt's 14x14 stage: every
  // sliding block of the row reads the padding; 1.2-2x faster at 96-384 channels, level
  // at 768, and 0.6-0.7x on 21- and 28-wide rows: NOTES.md section 22)
  const bool wide = g.KW > 7 || (g.KW == 7 && g.OW <= 2 * g.KW);
  return g.Cg * g.M == 1 && plain && wide && slab <= kWideSlabBytes;
}

// acc[p] += the input row `xr` (W vectors) through the kernel row `wr` (KWp vectors, KW
// of them the kernel's, the rest zeros), for output columns ow0 + p: output column o
// reads input column o - pw + k through tap k. R taps at a time stay in registers and
// each input vector is loaded once and multiplied into every output column it reaches
// through them (P * R multiply-adds for P + R - 1 loads); input columns outside the row
// are skipped.
template <int P, int R>
inline void wide_row(const Geom& g, vf (&acc)[P], const float* xr, const float* wr,
                     int64_t ow0, int64_t KWp) {
  for (int64_t kb = 0; kb < KWp; kb += R) {
    const int64_t first = ow0 - g.pw + kb;  // input column of (p, r) = (0, 0)
    if (first >= g.W || first + P + R - 2 < 0) continue;
    vf wv[R];
    for (int r = 0; r < R; ++r) wv[r] = load(wr + (kb + r) * kLanes);
    const bool inside = first >= 0 && first + P + R - 2 < g.W;
    const float* xc = xr + first * kLanes;
#pragma GCC unroll 64
    for (int i = 0; i < P + R - 1; ++i) {
      if (inside || static_cast<uint64_t>(first + i) < static_cast<uint64_t>(g.W)) {
        vf xv = load(xc);
        in_register(xv);
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
          const int p = i - r;  // output column p reads input column first + p + r
          if (p >= 0 && p < P) acc[p] += xv * wv[r];
        }
      }
      xc = next(xc, kLanes);
    }
  }
}

template <int P, int R, typename Pool>
void depthwise_wide(Pool& pool, const Geom& g, const float* x, const float* w, float* y) {
  const int64_t gvs = g.Gp / kLanes, pixels = g.D * g.H * g.W, ntaps = g.KD * g.KH * g.KW;
  const int64_t KWp = (g.KW + R - 1) / R * R;  // kernel rows padded with zeros to whole R
  // tasks: vectors x runs of images, at least 4 per thread where the batch allows
  const int64_t runs = std::min<int64_t>(g.N, (4 * pool.num_threads() + gvs - 1) / gvs);
  parallel_for(pool, gvs * runs, [&](int64_t task) {
    const int64_t gv = task / runs, run = task % runs;
    std::vector<float> wbuf(ntaps / g.KW * KWp * kLanes, 0.0f), xbuf(pixels * kLanes);
    for (int64_t t = 0; t < ntaps; ++t)
      store(&wbuf[(t / g.KW * KWp + t % g.KW) * kLanes], load(w + t * g.Gp + gv * kLanes));
    for (int64_t n = g.N * run / runs; n < g.N * (run + 1) / runs; ++n) {
      const float* xn = x + n * pixels * g.Gp + gv * kLanes;
      for (int64_t q = 0; q < pixels; ++q) store(&xbuf[q * kLanes], load(xn + q * g.Gp));
      for (int64_t od = 0; od < g.OD; ++od)
        for (int64_t oh = 0; oh < g.OH; ++oh) {
          float* y_row = y + ((n * g.OD + od) * g.OH + oh) * g.OW * g.Gp + gv * kLanes;
          for (int64_t ow0 = 0; ow0 < g.OW; ow0 += P) {
            vf acc[P];
            for (int p = 0; p < P; ++p) acc[p] = vf{};
            for (int64_t kd = 0; kd < g.KD; ++kd) {
              const int64_t id = input_index(od, kd, 1, g.pd, 1, 1, g.D);
              if (id < 0) continue;
              for (int64_t kh = 0; kh < g.KH; ++kh) {
                const int64_t ih = input_index(oh, kh, 1, g.ph, 1, 1, g.H);
                if (ih < 0) continue;
                wide_row<P, R>(g, acc, &xbuf[(id * g.H + ih) * g.W * kLanes],
                               &wbuf[(kd * g.KH + kh) * KWp * kLanes], ow0, KWp);
              }
            }
            for (int64_t p = 0; p < std::min<int64_t>(P, g.OW - ow0); ++p)
              store(y_row + (ow0 + p) * g.Gp, acc[p]);
          }
        }
    }
  });
}

// Columns per wide block: the row in blocks of at most 16 (11 with 16 registers, 4 taps
// in registers instead of 8), as even as they come.
template <typename Pool>
void depthwise_wide_columns(Pool& pool, const Geom& g, const float* x, const float* w, float* y) {
  if constexpr (kRegs >= 32) {
    const int64_t blocks = (g.OW + 15) / 16, p = (g.OW + blocks - 1) / blocks;
    if (p <= 8) return depthwise_wide<8, 8>(pool, g, x, w, y);
    if (p <= 12) return depthwise_wide<12, 8>(pool, g, x, w, y);
    if (p <= 14) return depthwise_wide<14, 8>(pool, g, x, w, y);
    return depthwise_wide<16, 8>(pool, g, x, w, y);
  }
  const int64_t blocks = (g.OW + 10) / 11, p = (g.OW + blocks - 1) / blocks;
  if (p <= 5) return depthwise_wide<5, 4>(pool, g, x, w, y);
  if (p <= 7) return depthwise_wide<7, 4>(pool, g, x, w, y);
  if (p <= 9) return depthwise_wide<9, 4>(pool, g, x, w, y);
  depthwise_wide<11, 4>(pool, g, x, w, y);
}

// The forward convolution, its register blocking chosen by the group shape.
template <typename Pool>
void run_forward(Pool& pool, const Geom& g, const float* xp, const float* wp, float* yp) {
  const int64_t gvs = g.Gp / kLanes;
  if (depthwise_wide_applies(g)) return depthwise_wide_columns(pool, g, xp, wp, yp);
  if (g.Cg * g.M == 1) {  // depthwise: several vectors of groups per block
    // the sliding blocks of widths 5 and 7 keep at most 2 vectors' kernels in registers
    // (with 16 registers, two vectors, whole cache lines, only for 3 columns: 4-column
    // blocks, measured 1.0-1.3x faster than one vector's 11 on MobileNetV2's layers)
    const bool narrow = g.KW != 5 && g.KW != 7;
    if constexpr (kRegs >= 32) {
      if (gvs % 4 == 0 && narrow) return depthwise_width<4>(pool, g, xp, wp, yp);
      if (gvs % 3 == 0 && narrow) return depthwise_width<3>(pool, g, xp, wp, yp);
      if (gvs % 2 == 0) return depthwise_width<2>(pool, g, xp, wp, yp);
    }
    if (gvs % 2 == 0 && g.KW == 3) return depthwise_width<2>(pool, g, xp, wp, yp);
    depthwise_width<1>(pool, g, xp, wp, yp);
  } else if constexpr (kRegs >= 32) {  // blocks measured on ResNeXt's layers (NOTES.md section 13)
    if (g.M % 8 == 0) return forward_all<2, 8, 1>(pool, g, xp, wp, yp);
    if (g.M % 4 == 0 && gvs % 2 == 0) return forward_all<1, 4, 2>(pool, g, xp, wp, yp);
    if (g.M % 4 == 0) return forward_all<4, 4, 1>(pool, g, xp, wp, yp);
    if (g.M % 2 == 0) return forward_all<8, 2, 1>(pool, g, xp, wp, yp);
    forward_all<8, 1, 1>(pool, g, xp, wp, yp);
  } else {  // the same blocks with half the accumulators
    if (g.M % 4 == 0) return forward_all<2, 4, 1>(pool, g, xp, wp, yp);
    if (g.M % 2 == 0) return forward_all<4, 2, 1>(pool, g, xp, wp, yp);
    forward_all<8, 1, 1>(pool, g, xp, wp, yp);
  }
}

// ----------------------------------------------------------------------------------
// Kernel gradient: dw[tap, ci, m, :] = sum over (n, output position) of
// x[input position of the tap, ci, :] * dy[output position, m, :]. Each chunk of output
// rows accumulates into its own buffer; the buffers are summed at the end.

template <int CB, int MB>
void kgrad_span(const Geom& g, const Span& sp, const float* dy_row, float* dw_tap, int64_t gv) {
  const int64_t CgGp = g.Cg * g.Gp, MGp = g.M * g.Gp;
  for (int64_t ci0 = 0; ci0 < g.Cg; ci0 += CB) {
    for (int64_t m0 = 0; m0 < g.M; m0 += MB) {
      vf acc[CB][MB];
      for (int c = 0; c < CB; ++c)
        for (int m = 0; m < MB; ++m) acc[c][m] = vf{};
      const float* xb = sp.x + ci0 * g.Gp + gv * kLanes;
      const float* db = dy_row + sp.o0 * MGp + m0 * g.Gp + gv * kLanes;
      for (int64_t k = 0; k < sp.count; ++k) {
        vf xv[CB], dv[MB];
        for (int c = 0; c < CB; ++c) xv[c] = load(xb + c * g.Gp);
        for (int m = 0; m < MB; ++m) dv[m] = load(db + m * g.Gp);
        for (int c = 0; c < CB; ++c)
          for (int m = 0; m < MB; ++m) acc[c][m] += xv[c] * dv[m];
        xb = next(xb, sp.istep * CgGp);
        db = next(db, sp.ostep * MGp);
      }
      for (int c = 0; c < CB; ++c)
        for (int m = 0; m < MB; ++m) {
          float* out = dw_tap + ((ci0 + c) * g.M + m0 + m) * g.Gp + gv * kLanes;
          store(out, load(out) + acc[c][m]);
        }
    }
  }
}

template <int CB, int MB>
void kgrad_row(const Geom& g, const float* x, const float* dy, float* dw, int64_t row) {
  const float* dy_row = dy + row * g.OW * g.M * g.Gp;
  kernel_tap_spans(g, x, row, g.Cg * g.Gp, [&](const Span& sp) {
    float* dw_tap = dw + sp.tap * g.Cg * g.M * g.Gp;
    for (int64_t gv = 0; gv < g.Gp / kLanes; ++gv) kgrad_span<CB, MB>(g, sp, dy_row, dw_tap, gv);
  });
}

// Depthwise kernel gradient for kernel width KW and stride S without dilation, one
// vector of groups at a time: along an output row, P cotangent vectors stay in
// registers and each input vector is loaded once and multiplied into every tap it
// meets, the KW taps' sums in registers (about (2P + KW) / (P * KW) loads per
// multiply-add instead of two). Columns outside the input are skipped.
template <int KW, int S>
void depthwise_kgrad_row(const Geom& g, const float* x, const float* dy, float* dw, int64_t row) {
  constexpr int P = kRegs >= 32 ? 16 : 8;
  const int64_t oh = row % g.OH, od = (row / g.OH) % g.OD, n = row / (g.OH * g.OD);
  const float* dy_row = dy + row * g.OW * g.Gp;
  int64_t lo = 0, hi = 0;
  inside_columns(g, &lo, &hi);
  for (int64_t kd = 0; kd < g.KD; ++kd) {
    int64_t id = input_index(od, kd, g.sd, g.pd, g.rd, 1, g.D);
    if (id < 0) continue;
    for (int64_t kh = 0; kh < g.KH; ++kh) {
      int64_t ih = input_index(oh, kh, g.sh, g.ph, g.rh, 1, g.H);
      if (ih < 0) continue;
      const float* x_row = x + ((n * g.D + id) * g.H + ih) * g.W * g.Gp;
      float* dw_row = dw + (kd * g.KH + kh) * g.KW * g.Gp;  // taps (kd, kh, 0..KW)
      for (int64_t gv = 0; gv < g.Gp / kLanes; ++gv) {
        vf acc[KW];
        for (int kw = 0; kw < KW; ++kw) acc[kw] = vf{};
        for (int64_t ow0 = 0; ow0 < g.OW; ow0 += P) {
          const int64_t np = std::min<int64_t>(P, g.OW - ow0), first = ow0 * S - g.pw;
          const bool edge = !(ow0 >= lo && ow0 + P <= hi);
          vf dv[P];
          const float* dc = dy_row + ow0 * g.Gp + gv * kLanes;
          for (int p = 0; p < P; ++p) {
            dv[p] = p < np ? load(dc) : vf{};
            dc = next(dc, g.Gp);
          }
          const float* xc = x_row + first * g.Gp + gv * kLanes;
#pragma GCC unroll 64
          for (int i = 0; i < (P - 1) * S + KW; ++i) {
            if (!edge || static_cast<uint64_t>(first + i) < static_cast<uint64_t>(g.W)) {
              vf xv = load(xc);
              in_register(xv);
#pragma GCC unroll 8
              for (int kw = 0; kw < KW; ++kw) {
                const int q = i - kw;  // output column q / S reads input column i
                if (q >= 0 && q % S == 0 && q / S < P) acc[kw] += xv * dv[q / S];
              }
            }
            xc = next(xc, g.Gp);
          }
        }
        for (int kw = 0; kw < KW; ++kw) {
          float* out = dw_row + kw * g.Gp + gv * kLanes;
          store(out, load(out) + acc[kw]);
        }
      }
    }
  }
}

// Runs row(dw_partial, r) for every output row r: each chunk of rows accumulates into
// its own zeroed buffer, and the buffers are summed into dw at the end.
template <typename Pool, typename Row>
void kgrad_rows(Pool& pool, const Geom& g, float* dw, const Row& row) {
  const int64_t rows = g.N * g.OD * g.OH;
  const int64_t size = g.KD * g.KH * g.KW * g.Cg * g.M * g.Gp;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), rows));
  std::vector<std::vector<float>> partial(chunks);
  parallel_for(pool, chunks, [&](int64_t c) {
    std::vector<float>& acc = partial[c];
    acc.assign(size, 0.0f);
    for (int64_t r = rows * c / chunks; r < rows * (c + 1) / chunks; ++r) row(acc.data(), r);
  });
  std::copy(partial[0].begin(), partial[0].end(), dw);
  for (int64_t c = 1; c < chunks; ++c)
    for (int64_t i = 0; i < size; ++i) dw[i] += partial[c][i];
}

template <int CB, int MB, typename Pool>
void kgrad_all(Pool& pool, const Geom& g, const float* x, const float* dy, float* dw) {
  kgrad_rows(pool, g, dw, [&](float* acc, int64_t r) { kgrad_row<CB, MB>(g, x, dy, acc, r); });
}

template <int CB, typename Pool>
void kgrad_m(Pool& pool, const Geom& g, const float* x, const float* dy,
             float* dw) {
  if (g.M % 4 == 0)
    kgrad_all<CB, 4>(pool, g, x, dy, dw);
  else if (g.M % 2 == 0)
    kgrad_all<CB, 2>(pool, g, x, dy, dw);
  else
    kgrad_all<CB, 1>(pool, g, x, dy, dw);
}

template <int KW, int S, typename Pool>
void depthwise_kgrad_all(Pool& pool, const Geom& g, const float* x, const float* dy, float* dw) {
  kgrad_rows(pool, g, dw, [&](float* acc, int64_t r) { depthwise_kgrad_row<KW, S>(g, x, dy, acc, r); });
}

template <typename Pool>
void run_kernel_grad(Pool& pool, const Geom& g, const float* xp, const float* dp, float* wp) {
  const bool dilated = g.ld != 1 || g.lh != 1 || g.lw != 1;
  if (g.Cg * g.M == 1 && g.rw == 1 && (g.sw == 1 || g.sw == 2) && !dilated) {
    const bool s1 = g.sw == 1;
    if (g.KW == 3) return s1 ? depthwise_kgrad_all<3, 1>(pool, g, xp, dp, wp)
                             : depthwise_kgrad_all<3, 2>(pool, g, xp, dp, wp);
    if (g.KW == 5) return s1 ? depthwise_kgrad_all<5, 1>(pool, g, xp, dp, wp)
                             : depthwise_kgrad_all<5, 2>(pool, g, xp, dp, wp);
    if (g.KW == 7) return s1 ? depthwise_kgrad_all<7, 1>(pool, g, xp, dp, wp)
                             : depthwise_kgrad_all<7, 2>(pool, g, xp, dp, wp);
  }
  if (g.Cg % 4 == 0 && kRegs >= 32)  // 4 x 4 sums: half of the 32 registers
    kgrad_m<4>(pool, g, xp, dp, wp);
  else if (g.Cg % 2 == 0)
    kgrad_m<2>(pool, g, xp, dp, wp);
  else
    kgrad_m<1>(pool, g, xp, dp, wp);
}

template <typename Pool>
void run_forward_nhwc(Pool& pool, const Geom& g, const float* x, const float* w, float* y) {
  // (with at least two of its tasks, an image and pair of groups each, per thread: else
  // the rows' loop, split over the rows)
  if (plane_applies(g) && g.N * g.Gp >= 4 * pool.num_threads())
    return plane_forward(pool, g, x, w, y);
  if (g.M % 16 == 0)
    nhwc_forward_cb<16>(pool, g, x, w, y);
  else
    nhwc_forward_cb<8>(pool, g, x, w, y);
}

// Kernel gradient, channels last, split over the result rather than over the rows: one
// task per kernel tap and run of output vectors (L output channels of one group each). A
// task sums over every output row that reads the input through its tap, CB input channels
// x L outputs in registers across all the rows, and stores its slice of dw: no copy of
// the kernel per thread, and one store per slice instead of one per row.
template <int L, int CB>
void nhwc_kgrad_tap(const Geom& g, const float* x, const float* dy, float* dw, int64_t tap,
                    int64_t v0, int64_t v1) {
  using V = typename Chans<L>::V;
  constexpr int VL = Chans<L>::VL, NV = Chans<L>::NV;
  const int64_t C = g.Cg * g.Gp, O = g.M * g.Gp;
  const int64_t kw = tap % g.KW, kh = (tap / g.KW) % g.KH, kd = tap / (g.KW * g.KH);
  const Span sp = column_span(g, kw);
  std::vector<std::pair<const float*, const float*>> rows;  // (input, cotangent) pairs
  for (int64_t row = 0; sp.count > 0 && row < g.N * g.OD * g.OH; ++row)
    if (const float* x_row = input_row(g, x, row, kd, kh, C))
      rows.emplace_back(x_row + sp.q0 * C, dy + (row * g.OW + sp.o0) * O);
  float* dw_tap = dw + tap * g.Cg * O;
  // the rows in tiles of about kKgradTileBytes of this task's inputs and cotangents,
  // which stay in cache while every block sums over them (all rows at once, each block
  // read them from L3: DCGAN's 4x4 kernel gradient 58-65 -> 35 ms, NOTES.md section 20);
  // the first tile stores the sums, the others add to them
  const int64_t groups_read = (v1 - 1) * L / g.M - v0 * L / g.M + 1;
  const int64_t row_bytes = sp.count * (groups_read * g.Cg + (v1 - v0) * L) * sizeof(float);
  const size_t per_tile = std::max<int64_t>(1, kKgradTileBytes / std::max<int64_t>(row_bytes, 1));
  for (size_t r0 = 0; r0 == 0 || r0 < rows.size(); r0 += per_tile) {  // once if no rows
    const size_t r1 = std::min(rows.size(), r0 + per_tile);
    for (int64_t v = v0; v < v1; ++v) {
      const int64_t grp = v * L / g.M, m0 = v * L % g.M;
      channel_blocks<kKgradBlock<L, CB>>(g.Cg, [&](auto cb, int64_t ci0) {
        constexpr int B = decltype(cb)::value;
        V acc[B][NV] = {};
        for (size_t r = r0; r < r1; ++r)
          span_sums<L, B>(acc, rows[r].first + grp * g.Cg + ci0, rows[r].second + grp * g.M + m0,
                          sp.count, sp.istep * C, sp.ostep * O);
        float* out = dw_tap + ci0 * O + grp * g.M + m0;
        for (int c = 0; c < B; ++c)
          for (int u = 0; u < NV; ++u) {
            float* o = out + c * O + u * VL;
            storev(o, r0 == 0 ? acc[c][u] : loadv<V>(o) + acc[c][u]);
          }
      });
    }
  }
}

template <int L, int CB, typename Pool>
void nhwc_kgrad_all(Pool& pool, const Geom& g, const float* x, const float* dy, float* dw) {
  const int64_t taps = g.KD * g.KH * g.KW, vectors = g.Gp * g.M / L;
  // kernels larger than half of L2 (assumed 1 MB) split over the result; smaller ones keep
  // a copy per thread and split the rows, a row's inputs and cotangents then reused from
  // L1 by every tap (NOTES.md section 15)
  if (taps * g.Cg * g.M * g.Gp * sizeof(float) > kSplitResultBytes) {
    // about 8 tasks per thread: runs of output vectors, the same number per tap
    const int64_t per_tap = std::clamp<int64_t>((8 * pool.num_threads() + taps - 1) / taps, 1, vectors);
    const int64_t run = (vectors + per_tap - 1) / per_tap, runs = (vectors + run - 1) / run;
    parallel_for(pool, taps * runs, [&](int64_t i) {
      const int64_t v0 = (i % runs) * run;
      nhwc_kgrad_tap<L, CB>(g, x, dy, dw, i / runs, v0, std::min(vectors, v0 + run));
    });
    return;
  }
  kgrad_rows(pool, g, dw, [&](float* acc, int64_t r) { nhwc_kgrad_row<L, CB>(g, x, dy, acc, r); });
}

// Input channels per step in the channels-last kernel gradient: CB sums of L channels,
// a cotangent vector and a broadcast input value in the registers.
template <int L>
constexpr int kNhwcGradStep = kRegs >= 32 ? 16 : (L == 8 ? 8 : 4);

template <int L, typename Pool>
void nhwc_kgrad_cb(Pool& pool, const Geom& g, const float* x, const float* dy, float* dw) {
  with_channel_step<kNhwcGradStep<L>>(g.Cg, [&](auto cb) {
    nhwc_kgrad_all<L, decltype(cb)::value>(pool, g, x, dy, dw);
  });
}

template <typename Pool>
void run_kernel_grad_nhwc(Pool& pool, const Geom& g, const float* x, const float* dy, float* dw) {
  if (g.M % 16 == 0)
    nhwc_kgrad_cb<16>(pool, g, x, dy, dw);
  else
    nhwc_kgrad_cb<8>(pool, g, x, dy, dw);
}

// XLA:CPU takes outputs larger than glibc's mmap threshold (at most 32 MB) from a fresh
// mmap on every call, and the first write to each 4 KB page of one faults and zeroes it:
// a quarter of MobileNetV2's stride-2 forward+backward here (its 38.5 MB input gradient).
// The 2 MB-aligned interior of every output of at least kHugePageBytes is advised for
// transparent huge pages, 512x fewer faults where the system allows them (THP "always"
// or "madvise"; elsewhere the advice does nothing). Measured on the Zen 3 (NOTES.md
// section 19): that forward+backward 29.7 -> 16.9 ms, C3D conv1's forward (205 MB out)
// 244 -> 141 ms; outputs the heap holds (4-26 MB) unchanged.
constexpr int64_t kHugePageBytes = 4 << 20;

inline void advise_huge_pages(void* p, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (bytes < kHugePageBytes) return;
  constexpr uintptr_t kHuge = 2 << 20;
  const uintptr_t lo = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t hi = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHuge - 1);
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);  // advice only
#else
  (void)p;
  (void)bytes;
#endif
}

// The four loops behind one signature: (input, kernel or cotangent) -> result.
template <bool NHWC, bool KERNEL_GRAD>
ffi::Error Run(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
               ffi::ResultBuffer<ffi::F32> out, ffi::Span<const int64_t> geom) {
  Geom g;
  if (!read_geom(geom, &g, NHWC))
    return ffi::Error::InvalidArgument("cpu_direct: bad geometry");
  const float *ap = a.typed_data(), *bp = b.typed_data();
  float* op = out->typed_data();
  advise_huge_pages(op, out->size_bytes());
  if (NHWC && KERNEL_GRAD) run_kernel_grad_nhwc(pool, g, ap, bp, op);
  if (NHWC && !KERNEL_GRAD) run_forward_nhwc(pool, g, ap, bp, op);
  if (!NHWC && KERNEL_GRAD) run_kernel_grad(pool, g, ap, bp, op);
  if (!NHWC && !KERNEL_GRAD) run_forward(pool, g, ap, bp, op);
  return ffi::Error::Success();
}

constexpr auto Forward = Run<false, false>;
constexpr auto KernelGrad = Run<false, true>;
constexpr auto ForwardNhwc = Run<true, false>;
constexpr auto KernelGradNhwc = Run<true, true>;

}  // namespace

// Both loops take (input, kernel-or-cotangent) -> result and the geometry attribute.
inline auto Binding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>()
      .Attr<ffi::Span<const int64_t>>("geom");
}

// Floats per vector of the compiled loops (16 with AVX-512, else 8): the automatic choice
// asks (some layers are faster elsewhere on 8-float vectors).
extern "C" int jaxconv_cpu_direct_lanes() { return kLanes; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxconvCpuDirectForward, Forward, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxconvCpuDirectKernelGrad, KernelGrad, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxconvCpuDirectForwardNhwc, ForwardNhwc, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxconvCpuDirectKernelGradNhwc, KernelGradNhwc, Binding());
