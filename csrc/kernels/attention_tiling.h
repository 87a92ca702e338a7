// How the attention kernels cut windowed attention (pid/attention.h) into query tiles: shared by the CPU kernels
// (cpu/attention.cpp), the CUDA kernels (cuda/attention.cu, cuda/attention_mma.cuh) and the CPU-emulated test of the
// tensor-core kernel. Private to the kernels: the API's semantics are window_start / window_len (pid/attention.h),
// constexpr functions that device code calls through nvcc's --expt-relaxed-constexpr (CMakeLists.txt).
#pragma once

#include <cstdint>

#include "host_device.h"
#include "pid/attention.h"

namespace pid {

// Windowed attention is processed in query tiles. Text query rows (present when Sq == Sk) form tiles of
// `rows` consecutive queries that see every key. The image grid is cut into blocks of tile_h x tile_w
// positions (at most `rows` of them); a block's keys are the text keys and the rectangle of image keys
// covering the union of its queries' windows, so the work per query grows with w^2, not with the grid.
struct WindowTiling {
  std::int64_t n_text_q;          // text query rows: n_text when Sq == Sk, else 0
  std::int64_t text_tiles;        // ceil(n_text_q / rows)
  std::int64_t tile_h, tile_w;    // image block shape
  std::int64_t tiles_h, tiles_w;  // number of blocks per axis
  std::int64_t rows;              // query rows per tile (capacity)

  PID_HOST_DEVICE std::int64_t tiles() const { return text_tiles + tiles_h * tiles_w; }
};

PID_HOST_DEVICE inline WindowTiling window_tiling(const AttentionParams& p, std::int64_t rows) {
  WindowTiling t{};
  t.rows = rows;
  t.n_text_q = p.Sq == p.Sk ? p.n_text : 0;
  t.text_tiles = (t.n_text_q + rows - 1) / rows;
  t.tile_w = p.grid_w < 8 ? p.grid_w : 8;
  if (t.tile_w > rows) t.tile_w = rows;
  if (t.tile_w < 1) t.tile_w = 1;
  t.tile_h = rows / t.tile_w;
  if (t.tile_h > p.grid_h) t.tile_h = p.grid_h;
  if (t.tile_h < 1) t.tile_h = 1;
  t.tiles_h = (p.grid_h + t.tile_h - 1) / t.tile_h;
  t.tiles_w = (p.grid_w + t.tile_w - 1) / t.tile_w;
  return t;
}

// The query tiles of `rows` rows a kernel launches: window_tiling's when windowed, else ceil(Sq / rows).
struct QueryTiling {
  WindowTiling wt;     // windowed only
  std::int64_t tiles;
};

PID_HOST_DEVICE inline QueryTiling query_tiling(const AttentionParams& p, std::int64_t rows) {
  QueryTiling q{};
  if (p.window > 0) {
    q.wt = window_tiling(p, rows);
    q.tiles = q.wt.tiles();
  } else {
    q.tiles = (p.Sq + rows - 1) / rows;
  }
  return q;
}

// An image block: query positions [i0, i0 + h) x [j0, j0 + w) of the grid, and the key rectangle
// [r0, r0 + rh) x [c0, c0 + cw) covering all their windows.
struct ImageTile {
  std::int64_t i0, j0, h, w;
  std::int64_t r0, c0, rh, cw;
};

PID_HOST_DEVICE inline ImageTile image_tile(const AttentionParams& p, const WindowTiling& t,
                                            std::int64_t index) {  // index in [0, tiles_h * tiles_w)
  ImageTile it{};
  it.i0 = (index / t.tiles_w) * t.tile_h;
  it.j0 = (index % t.tiles_w) * t.tile_w;
  it.h = p.grid_h - it.i0 < t.tile_h ? p.grid_h - it.i0 : t.tile_h;
  it.w = p.grid_w - it.j0 < t.tile_w ? p.grid_w - it.j0 : t.tile_w;
  // window_start is non-decreasing in the position, so the union of the windows is one rectangle.
  it.r0 = window_start(it.i0, p.window, p.grid_h);
  it.c0 = window_start(it.j0, p.window, p.grid_w);
  it.rh = window_start(it.i0 + it.h - 1, p.window, p.grid_h) + window_len(p.window, p.grid_h) - it.r0;
  it.cw = window_start(it.j0 + it.w - 1, p.window, p.grid_w) + window_len(p.window, p.grid_w) - it.c0;
  return it;
}

}  // namespace pid
