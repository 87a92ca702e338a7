// CPU implementation of pid::qk_norm_rope and pid::attention (see pid/attention.h).
//
// attention: OpenMP over (batch, head, query tiles of 64 rows). A tile keeps its queries transposed
// (Qt[d][row], pre-multiplied by scale * log2(e)), its float32 output rows O and the running max m
// and sum l of every row. Keys are visited in chunks of 64: scores St[key][row] = K Qt (register-
// blocked: a few keys x all 64 rows per pass over d), the online softmax update in base 2 (vectorised
// over rows), then O = O * alpha + P V (register-blocked: a few rows x the whole head_dim). The
// vector code uses GCC/Clang vector extensions at the widest width the variant's flags enable (avx512:
// AVX-512, avx2: AVX2, baseline: 128-bit), so d = 64 and d = 72 compile to straight-line FMA loops.
#include "pid/attention.h"
#include "../attention_tiling.h"
#include "../attention_dtypes.h"
#include "load_store.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

// PID_CPU_NS: this file is compiled once per instruction-set variant (CMakeLists.txt), each into its own
// namespace; the public functions in namespace pid (isa_select.cpp) call the variant chosen at run time.
namespace pid::PID_CPU_NS {
namespace {

// ---- vectors -------------------------------------------------------------------------------------

#if defined(__AVX512F__)
constexpr int kLanes = 16, kVecRegs = 32;
#elif defined(__AVX__)
constexpr int kLanes = 8, kVecRegs = 16;
#else
constexpr int kLanes = 4, kVecRegs = 16;
#endif
typedef float vf __attribute__((vector_size(kLanes * sizeof(float))));
typedef std::int32_t vi __attribute__((vector_size(kLanes * sizeof(std::int32_t))));

// Narrower vectors where a row length needs them (head_dim 72 = 9 x 8 on a 16-lane machine).
template <int N> struct VecT {
  typedef float type __attribute__((vector_size(N * sizeof(float))));
};
template <int N> using vec = typename VecT<N>::type;
template <int N> inline vec<N> loadn(const float* p) {
  vec<N> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <int N> inline void storen(float* p, vec<N> v) { std::memcpy(p, &v, sizeof v); }

inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
inline vf splat(float a) { return vf{} + a; }
inline vf vmax(vf a, vf b) { return a > b ? a : b; }

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// 2^x for x <= 0 (x may be -inf): x = n + f with n = round(x), 2^f by its degree-7 Taylor polynomial
// (truncation < 5e-9 relative on |f| <= 1/2), 2^n by the exponent bits. About 2 ulp; results below
// 2^-125 are flushed to 0, so masked scores (-inf) give exactly 0.
inline vf exp2v(vf x) {
  const vi keep = x >= -125.f;
  x = keep ? x : splat(-125.f);
  const vf n = (x + 12582912.f) - 12582912.f;  // round to nearest (1.5 * 2^23 trick; no -ffast-math)
  const vf f = x - n;                           // exact, in [-1/2, 1/2]
  vf p = splat(1.5252733804059840e-5f);         // ln2^7 / 7!
  p = p * f + 1.5403530393381606e-4f;           // ln2^6 / 6!
  p = p * f + 1.3333558146428443e-3f;           // ln2^5 / 5!
  p = p * f + 9.6181291076284772e-3f;           // ln2^4 / 4!
  p = p * f + 5.5504108664821580e-2f;           // ln2^3 / 3!
  p = p * f + 2.4022650695910071e-1f;           // ln2^2 / 2!
  p = p * f + 6.9314718055994531e-1f;           // ln2
  p = p * f + 1.f;
  vi bits;
  std::memcpy(&bits, &p, sizeof bits);
  bits += __builtin_convertvector(n, vi) << 23;
  vf r;
  std::memcpy(&r, &bits, sizeof r);
  return keep ? r : vf{};
}

// 64-byte aligned float scratch.
struct Scratch {
  std::unique_ptr<float, decltype(&std::free)> ptr{nullptr, &std::free};
  float* get(std::size_t n) {
    const std::size_t bytes = ((n * sizeof(float) + 63) / 64) * 64;
    ptr.reset(static_cast<float*>(std::aligned_alloc(64, bytes ? bytes : 64)));
    if (!ptr) throw std::bad_alloc();
    return ptr.get();
  }
};

// ---- attention -----------------------------------------------------------------------------------

constexpr int kRows = 64;                 // query rows per tile
constexpr int kRowVecs = kRows / kLanes;  // vectors per column of a tile
constexpr int kChunk = 64;                // keys per chunk
static_assert(kRows % kLanes == 0, "tile rows must be a multiple of the vector width");

// Row vectors processed together by the score kernel, and keys per pass.
constexpr int kQkRowVecs = kRowVecs < 4 ? kRowVecs : 4;
constexpr int kQkKeys = std::max(1, std::min(6, (kVecRegs - kQkRowVecs - 2) / kQkRowVecs));

// St[j][0..kRows) = sum_k krow[j][k] * Qt[k][0..kRows) for keys j in [0, nk).
template <int JB>
inline void qk_pass(const float* Qt, const float* const* krow, int j0, int D, int rv0, float* St) {
  vf acc[JB][kQkRowVecs];
#pragma GCC unroll 8
  for (int jj = 0; jj < JB; ++jj)
#pragma GCC unroll 8
    for (int i = 0; i < kQkRowVecs; ++i) acc[jj][i] = vf{};
  const float* kr[JB];
#pragma GCC unroll 8
  for (int jj = 0; jj < JB; ++jj) kr[jj] = krow[j0 + jj];
  for (int k = 0; k < D; ++k) {
    vf qv[kQkRowVecs];
#pragma GCC unroll 8
    for (int i = 0; i < kQkRowVecs; ++i) qv[i] = load(Qt + k * kRows + (rv0 + i) * kLanes);
#pragma GCC unroll 8
    for (int jj = 0; jj < JB; ++jj) {
      const vf kb = splat(kr[jj][k]);
#pragma GCC unroll 8
      for (int i = 0; i < kQkRowVecs; ++i) acc[jj][i] += kb * qv[i];
    }
  }
#pragma GCC unroll 8
  for (int jj = 0; jj < JB; ++jj)
#pragma GCC unroll 8
    for (int i = 0; i < kQkRowVecs; ++i) store(St + (j0 + jj) * kRows + (rv0 + i) * kLanes, acc[jj][i]);
}

void qk_scores(const float* Qt, const float* const* krow, int nk, int D, float* St) {
  for (int rv0 = 0; rv0 < kRowVecs; rv0 += kQkRowVecs) {
    int j = 0;
    for (; j + kQkKeys <= nk; j += kQkKeys) qk_pass<kQkKeys>(Qt, krow, j, D, rv0, St);
    for (; j < nk; ++j) qk_pass<1>(Qt, krow, j, D, rv0, St);
  }
}

// O[r][:] = O[r][:] * alpha[r] + sum_j P[j][r] * V[j][:] for rows r in [0, mq); rows of O and V hold
// NV vectors of VL lanes (head_dim zero-padded). NV > 0: compile-time width, register-blocked over RB
// rows; NV == 0: any width W (a multiple of kLanes).
template <int NV, int RB, int VL>
inline void pv_rows(float* O, const float* Pt, const float* alpha, const float* Vc, int nk, int r0) {
  constexpr int W = NV * VL;
  vec<VL> acc[RB][NV];
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r) {
    const float a = alpha[r0 + r];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[r][v] = loadn<VL>(O + (r0 + r) * W + v * VL) * a;
  }
  for (int j = 0; j < nk; ++j) {
    vec<VL> vv[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) vv[v] = loadn<VL>(Vc + j * W + v * VL);
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) {
      const float p = Pt[j * kRows + r0 + r];
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[r][v] += p * vv[v];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) storen<VL>(O + (r0 + r) * W + v * VL, acc[r][v]);
}

template <int NV, int VL>
void pv_update(float* O, const float* Pt, const float* alpha, const float* Vc, int nk, int mq, int W) {
  if constexpr (NV > 0) {
    constexpr int RB = std::max(1, std::min(8, (kVecRegs - NV - 2) / NV));
    int r = 0;
    for (; r + RB <= mq; r += RB) pv_rows<NV, RB, VL>(O, Pt, alpha, Vc, nk, r);
    for (; r < mq; ++r) pv_rows<NV, 1, VL>(O, Pt, alpha, Vc, nk, r);
  } else {
    for (int r = 0; r < mq; ++r) {
      float* o = O + r * W;
      const vf a = splat(alpha[r]);
      for (int v = 0; v < W; v += kLanes) {
        vf acc = load(o + v) * a;
        for (int j = 0; j < nk; ++j) acc += splat(Pt[j * kRows + r]) * load(Vc + j * W + v);
        store(o + v, acc);
      }
    }
  }
}

// Query-window bounds of the rows of an image tile (as floats: exact for the grid sizes in use).
struct RowWindows {
  alignas(64) float rlo[kRows], rhi[kRows], clo[kRows], chi[kRows];
};

// One query tile's state: queries, output accumulator and the online-softmax statistics.
struct TileState {
  float* Qt;  // [D][kRows]
  float* O;   // [kRows][W]
  float* m;   // [kRows]
  float* l;   // [kRows]
  std::int64_t rows[kRows];  // query row index of each tile row
  int mq;                    // rows in use
};

// A chunk of keys: float32 rows for the scores, zero-padded float32 rows of V, and (masked chunks) the
// keys' grid coordinates.
struct KeyChunk {
  const float* krow[kChunk];
  float* Kc;  // [kChunk][D] scratch for converted / gathered keys
  float* Vc;  // [kChunk][W]
  alignas(64) float ka[kChunk], kb[kChunk];
  int nk;
  bool masked;
};

template <typename T>
struct Attention {
  const T *q, *k, *v;
  T* o;
  const AttentionParams& p;
  int D, W;            // head_dim, row length of O and of the V chunk (head_dim zero-padded)
  float qscale;        // scale * log2(e)

  Attention(const AttentionParams& p_, int W_)
      : q(static_cast<const T*>(p_.q)), k(static_cast<const T*>(p_.k)), v(static_cast<const T*>(p_.v)),
        o(static_cast<T*>(p_.o)), p(p_), D(int(p_.D)), W(W_) {
    qscale = float(double(p.scale) * 1.4426950408889634);
  }

  void load_queries(TileState& t, std::int64_t b, std::int64_t h) const {
    std::fill(t.Qt, t.Qt + std::size_t(D) * kRows, 0.f);
    for (int r = 0; r < t.mq; ++r) {
      const T* src = q + b * p.q_stride.b + h * p.q_stride.h + t.rows[r] * p.q_stride.s;
      for (int d = 0; d < D; ++d) t.Qt[d * kRows + r] = ld(src + d) * qscale;
    }
    std::fill(t.O, t.O + std::size_t(kRows) * W, 0.f);
    std::fill(t.m, t.m + kRows, kNegInf);
    std::fill(t.l, t.l + kRows, 0.f);
  }

  // Key rows key_index(0..n) of (b, h) into the chunk.
  template <typename KeyIndex>
  void load_keys(KeyChunk& c, std::int64_t b, std::int64_t h, int n, KeyIndex key_index) const {
    c.nk = n;
    const T* kb = k + b * p.k_stride.b + h * p.k_stride.h;
    const T* vb = v + b * p.v_stride.b + h * p.v_stride.h;
    for (int j = 0; j < n; ++j) {
      const std::int64_t row = key_index(j);
      const T* kr = kb + row * p.k_stride.s;
      if constexpr (std::is_same_v<T, float>) {
        c.krow[j] = kr;
      } else {
        float* dst = c.Kc + std::size_t(j) * D;
#pragma omp simd
        for (int d = 0; d < D; ++d) dst[d] = ld(kr + d);
        c.krow[j] = dst;
      }
      const T* vr = vb + row * p.v_stride.s;
      float* vd = c.Vc + std::size_t(j) * W;
#pragma omp simd
      for (int d = 0; d < D; ++d) vd[d] = ld(vr + d);
      for (int d = D; d < W; ++d) vd[d] = 0.f;
    }
  }

  template <int NV, int VL>
  void update(TileState& t, const KeyChunk& c, const RowWindows* win, float* St, float* alpha) const {
    qk_scores(t.Qt, c.krow, c.nk, D, St);
    if (c.masked) {
      for (int j = 0; j < c.nk; ++j) {
        const vf a = splat(c.ka[j]), bcol = splat(c.kb[j]);
        for (int rv = 0; rv < kRowVecs; ++rv) {
          const int o = rv * kLanes;
          const vi vis = (a >= load(win->rlo + o)) & (a < load(win->rhi + o)) & (bcol >= load(win->clo + o)) &
                         (bcol < load(win->chi + o));
          store(St + j * kRows + o, vis ? load(St + j * kRows + o) : splat(kNegInf));
        }
      }
    }
    for (int rv = 0; rv < kRowVecs; ++rv) {
      const int o = rv * kLanes;
      vf mx = splat(kNegInf);
      for (int j = 0; j < c.nk; ++j) mx = vmax(mx, load(St + j * kRows + o));
      const vf m_old = load(t.m + o);
      const vf m_new = vmax(m_old, mx);
      const vf m_use = m_new == kNegInf ? vf{} : m_new;  // a row with no visible key yet stays 0
      const vf a = exp2v(m_old - m_use);
      vf sum{};
      for (int j = 0; j < c.nk; ++j) {
        const vf pj = exp2v(load(St + j * kRows + o) - m_use);
        store(St + j * kRows + o, pj);
        sum += pj;
      }
      store(t.l + o, load(t.l + o) * a + sum);
      store(t.m + o, m_new);
      store(alpha + o, a);
    }
    pv_update<NV, VL>(t.O, St, alpha, c.Vc, c.nk, t.mq, W);
  }

  void finish(const TileState& t, std::int64_t b, std::int64_t h) const {
    for (int r = 0; r < t.mq; ++r) {
      T* dst = o + b * p.o_stride.b + h * p.o_stride.h + t.rows[r] * p.o_stride.s;
      const float inv = 1.f / t.l[r];
      const float* src = t.O + std::size_t(r) * W;
      for (int d = 0; d < D; ++d) st(dst + d, src[d] * inv);
    }
  }

  // Per-thread scratch for up to `group` tiles.
  struct Workspace {
    Scratch s_qt, s_o, s_ml, s_st, s_kc, s_vc;
    std::vector<TileState> tiles;
    KeyChunk chunk;
    RowWindows win;
    float* St;
    alignas(64) float alpha[kRows];
    Workspace(int group, int D, int W) : tiles(std::size_t(group)) {
      float* qt = s_qt.get(std::size_t(group) * D * kRows);
      float* ob = s_o.get(std::size_t(group) * kRows * W);
      float* ml = s_ml.get(std::size_t(group) * 2 * kRows);
      for (int g = 0; g < group; ++g) {
        tiles[g].Qt = qt + std::size_t(g) * D * kRows;
        tiles[g].O = ob + std::size_t(g) * kRows * W;
        tiles[g].m = ml + std::size_t(g) * 2 * kRows;
        tiles[g].l = tiles[g].m + kRows;
      }
      St = s_st.get(std::size_t(kChunk) * kRows);
      chunk.Kc = s_kc.get(std::size_t(kChunk) * D);
      chunk.Vc = s_vc.get(std::size_t(kChunk) * W);
    }
  };

  // Tiles ws.tiles[0..n) (rows set) against all keys, unmasked.
  template <int NV, int VL>
  void run_all_keys(Workspace& ws, int n, std::int64_t b, std::int64_t h) const {
    for (int g = 0; g < n; ++g) load_queries(ws.tiles[g], b, h);
    ws.chunk.masked = false;
    for (std::int64_t j0 = 0; j0 < p.Sk; j0 += kChunk) {
      const int nk = int(std::min<std::int64_t>(kChunk, p.Sk - j0));
      load_keys(ws.chunk, b, h, nk, [j0](int j) { return j0 + j; });
      for (int g = 0; g < n; ++g) update<NV, VL>(ws.tiles[g], ws.chunk, nullptr, ws.St, ws.alpha);
    }
    for (int g = 0; g < n; ++g) finish(ws.tiles[g], b, h);
  }

  // One image tile of windowed attention: text keys unmasked, then the key rectangle masked per row.
  template <int NV, int VL>
  void run_image_tile(Workspace& ws, const WindowTiling& wt, std::int64_t index, std::int64_t b,
                      std::int64_t h) const {
    const ImageTile it = image_tile(p, wt, index);
    TileState& t = ws.tiles[0];
    t.mq = int(it.h * it.w);
    const std::int64_t wh = window_len(p.window, p.grid_h), ww = window_len(p.window, p.grid_w);
    for (int r = 0; r < kRows; ++r) {
      if (r < t.mq) {
        const std::int64_t i = it.i0 + r / it.w, j = it.j0 + r % it.w;
        t.rows[r] = wt.n_text_q + i * p.grid_w + j;
        const std::int64_t si = window_start(i, p.window, p.grid_h), sj = window_start(j, p.window, p.grid_w);
        ws.win.rlo[r] = float(si), ws.win.rhi[r] = float(si + wh);
        ws.win.clo[r] = float(sj), ws.win.chi[r] = float(sj + ww);
      } else {  // unused rows see everything, so they never hold a row without keys
        ws.win.rlo[r] = ws.win.clo[r] = -1.f;
        ws.win.rhi[r] = ws.win.chi[r] = 3e38f;
      }
    }
    load_queries(t, b, h);
    ws.chunk.masked = false;
    for (std::int64_t j0 = 0; j0 < p.n_text; j0 += kChunk) {
      const int nk = int(std::min<std::int64_t>(kChunk, p.n_text - j0));
      load_keys(ws.chunk, b, h, nk, [j0](int j) { return j0 + j; });
      update<NV, VL>(t, ws.chunk, nullptr, ws.St, ws.alpha);
    }
    ws.chunk.masked = true;
    const std::int64_t n_rect = it.rh * it.cw;
    for (std::int64_t e0 = 0; e0 < n_rect; e0 += kChunk) {
      const int nk = int(std::min<std::int64_t>(kChunk, n_rect - e0));
      for (int j = 0; j < nk; ++j) {
        ws.chunk.ka[j] = float(it.r0 + (e0 + j) / it.cw);
        ws.chunk.kb[j] = float(it.c0 + (e0 + j) % it.cw);
      }
      const std::int64_t n_text = p.n_text, gw = p.grid_w;
      const float* ka = ws.chunk.ka;
      const float* kb = ws.chunk.kb;
      load_keys(ws.chunk, b, h, nk,
                [=](int j) { return n_text + std::int64_t(ka[j]) * gw + std::int64_t(kb[j]); });
      update<NV, VL>(t, ws.chunk, &ws.win, ws.St, ws.alpha);
    }
    finish(t, b, h);
  }

  template <int NV, int VL>
  void run() const {
    const std::int64_t BH = p.B * p.H;
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    const bool windowed = p.window > 0;
    const WindowTiling wt = windowed ? window_tiling(p, kRows) : WindowTiling{};
    // Global (and the text rows of windowed): tasks of `group` consecutive 64-row tiles, which share
    // each converted key chunk; smaller groups when there would be too few tasks to spread.
    const std::int64_t shared_rows = windowed ? wt.n_text_q : p.Sq;
    const std::int64_t shared_tiles = (shared_rows + kRows - 1) / kRows;
    int group = 4;
    while (group > 1 && BH * ((shared_tiles + group - 1) / group) < 4 * threads) group /= 2;
    const std::int64_t shared_tasks = (shared_tiles + group - 1) / group;
    const std::int64_t image_tasks = windowed ? wt.tiles_h * wt.tiles_w : 0;
    const std::int64_t per_bh = shared_tasks + image_tasks;
    const std::int64_t n_tasks = BH * per_bh;
    const double work = double(p.Sq) * double(std::min<std::int64_t>(p.Sk, windowed ? 4096 : p.Sk)) * D * BH;
#pragma omp parallel if (work >= (1 << 18) && n_tasks > 1)
    {
      Workspace ws(group, D, W);
#pragma omp for schedule(dynamic, 1)
      for (std::int64_t task = 0; task < n_tasks; ++task) {
        const std::int64_t bh = task / per_bh, local = task % per_bh;
        const std::int64_t b = bh / p.H, h = bh % p.H;
        if (local < shared_tasks) {
          const std::int64_t first = local * group * kRows;
          int n = 0;
          for (int g = 0; g < group; ++g) {
            const std::int64_t r0 = first + std::int64_t(g) * kRows;
            if (r0 >= shared_rows) break;
            TileState& t = ws.tiles[g];
            t.mq = int(std::min<std::int64_t>(kRows, shared_rows - r0));
            for (int r = 0; r < t.mq; ++r) t.rows[r] = r0 + r;
            ++n;
          }
          run_all_keys<NV, VL>(ws, n, b, h);
        } else {
          run_image_tile<NV, VL>(ws, wt, local - shared_tasks, b, h);
        }
      }
    }
  }
};

template <typename T>
void attention_impl(const AttentionParams& p) {
  if (p.B * p.H * p.Sq == 0 || p.D <= 0) return;
  // Compile-time row widths for head_dim 64 and 72 (72 = 9 x 8 lanes rather than 5 x 16 padded to 80);
  // any other head_dim takes the generic path, padded to whole vectors.
  constexpr int kVl72 = kLanes > 8 ? 8 : kLanes, kNv72 = (72 + kVl72 - 1) / kVl72;
  constexpr int kNv64 = (64 + kLanes - 1) / kLanes;
  const int nv = int((p.D + kLanes - 1) / kLanes);
  if (p.D == 72)
    Attention<T>(p, kNv72 * kVl72).template run<kNv72, kVl72>();
  else if (nv == kNv64)
    Attention<T>(p, kNv64 * kLanes).template run<kNv64, kLanes>();
  else
    Attention<T>(p, nv * kLanes).template run<0, kLanes>();
}

// ---- qk_norm_rope --------------------------------------------------------------------------------

template <typename In, typename Wt, typename Out>
void qk_norm_rope_impl(const QkNormRopeParams& p) {
  const In* qkv = static_cast<const In*>(p.qkv);
  const Wt* weights[2] = {static_cast<const Wt*>(p.q_weight), static_cast<const Wt*>(p.k_weight)};
  Out* outs[2] = {static_cast<Out*>(p.q_out), static_cast<Out*>(p.k_out)};
  const std::int64_t rows[2] = {p.q_rows, p.k_rows}, offsets[2] = {p.q_offset, p.k_offset};
  const std::int64_t D = p.D, half = D / 2, BN = p.B * p.N;
  // The reference multiplies the normalised value (cast to the input dtype) by the weight in the
  // promoted dtype: bfloat16 only when both are bfloat16.
  constexpr bool round_product = std::is_same_v<In, bf16> && std::is_same_v<Wt, bf16>;
#pragma omp parallel if (BN * p.H * D >= (1 << 16))
  {
    std::vector<float> y(static_cast<std::size_t>(D));
#pragma omp for schedule(static)
    for (std::int64_t bn = 0; bn < BN; ++bn) {
      const std::int64_t b = bn / p.N, n = bn % p.N;
      for (int which = 0; which < 2; ++which) {
        if (!outs[which]) continue;
        const Wt* w = weights[which];
        for (std::int64_t h = 0; h < p.H; ++h) {
          const In* x = qkv + b * p.qkv_stride[0] + n * p.qkv_stride[1] + which * p.qkv_stride[2] +
                        h * p.qkv_stride[3];
          float ss = 0.f;
#pragma omp simd reduction(+ : ss)
          for (std::int64_t d = 0; d < D; ++d) {
            const float xv = ld(x + d);
            ss += xv * xv;
          }
          const float inv = 1.f / std::sqrt(ss / float(D) + p.eps);
          for (std::int64_t d = 0; d < D; ++d) {
            const float r = round_to<In>(ld(x + d) * inv);
            const float yv = ld(w + d) * r;
            y[d] = round_product ? round_bf16(yv) : yv;
          }
          Out* dst = outs[which] + ((b * p.H + h) * rows[which] + offsets[which] + n) * D;
          if (p.cos) {
            const float* c = p.cos + n * half;
            const float* s = p.sin + n * half;
            // The rotation is cast back to the promoted dtype first (bfloat16 when it is), as the reference.
            auto promoted = [](float v) { return round_product ? round_bf16(v) : v; };
            for (std::int64_t i = 0; i < half; ++i) {
              const float a = y[2 * i], bb = y[2 * i + 1];
              st(dst + 2 * i, promoted(a * c[i] - bb * s[i]));
              st(dst + 2 * i + 1, promoted(a * s[i] + bb * c[i]));
            }
          } else {
            for (std::int64_t d = 0; d < D; ++d) st(dst + d, y[d]);
          }
        }
      }
    }
  }
}

}  // namespace

void qk_norm_rope_cpu(const QkNormRopeParams& p) {
  if (p.B * p.N * p.H == 0 || p.D == 0 || (!p.q_out && !p.k_out)) return;
  with_qk_norm_rope_dtypes<bf16>("pid::qk_norm_rope_cpu", p, [&](auto in, auto wt, auto out) {
    qk_norm_rope_impl<decltype(in), decltype(wt), decltype(out)>(p);
  });
}

void attention_cpu(const AttentionParams& p) {
  with_attention_dtypes<bf16>("pid::attention_cpu", p, [&](auto t) { attention_impl<decltype(t)>(p); });
}

}  // namespace pid::PID_CPU_NS
