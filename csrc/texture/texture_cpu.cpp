// CPU texture sampling. Pixels are independent in the forward pass and for the uv gradient. The
// texture gradient is a scatter; it is made deterministic without per-thread texture copies:
// texel rows are grouped into bands (horizontal stripes of each texture, through all its mip
// levels, so a pixel's two levels usually share one), a counting sort over fixed chunks of
// pixels lists for each band the pixels that touch it in pixel order, and one task per band adds
// those pixels' contributions. Every texel thus sums its contributions in pixel (then corner)
// order, whatever the thread count, band count or chunk size.
#include "texture/texture.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace diffrender {
namespace {

constexpr int64_t kPixelGrain = 4096;
// Bounds the per-(band, chunk) counters to about 128 × 256.
constexpr int64_t kMaxChunks = 256;
constexpr int64_t kMaxBands = 128;
// A footprint spans two rows in each of its two levels, so at most four bands.
constexpr int kFootprintRows = 4;

template <typename T>
void forward_impl(const TextureInputs& in, at::Tensor& out) {
  const SamplePixels<T> px = sample_pixels<T>(in);
  const T* levels = in.levels.data_ptr<T>();
  T* result = out.data_ptr<T>();
  const int channels = in.mips.channels;
  at::parallel_for(0, px.batch * px.pixels_per_image, kPixelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p)
      sample_pixel(pixel_footprint(px, in.mips, p), channels, levels, result + p * channels);
  });
}

// Row y of level l of texture image i lies in band i·stripes + stripe_of_row[row_start[l] + y]:
// stripe ⌊y·stripes / height_l⌋ covers the same part of the image on every level.
struct RowBands {
  int64_t stripes, count;
  int64_t row_start[kMaxMipLevels];
  std::vector<int32_t> stripe_of_row;

  explicit RowBands(const MipPyramid& mips)
      : stripes(std::clamp<int64_t>(kMaxBands / mips.texture_batch, 1, mips.height[0])),
        count(mips.texture_batch * stripes) {
    for (int l = 0; l < mips.num_levels; ++l) {
      row_start[l] = static_cast<int64_t>(stripe_of_row.size());
      for (int64_t y = 0; y < mips.height[l]; ++y)
        stripe_of_row.push_back(static_cast<int32_t>(y * stripes / mips.height[l]));
    }
  }

  template <typename T>
  int64_t of_corner(const PixelFootprint<T>& f, int j) const {
    const int i = j / 4;
    return f.image * stripes + stripe_of_row[row_start[f.level[i]] + corner_row(f.taps[i], j % 4)];
  }
};

// The distinct bands a footprint touches, in found[0..count), then -1s.
template <typename T>
void footprint_bands(const PixelFootprint<T>& f, const RowBands& bands, int32_t found[kFootprintRows]) {
  int count = 0;
  for (int j = 0; j < 4 * f.count; j += 2) {  // corners 2m and 2m+1 share a row
    const int32_t band = static_cast<int32_t>(bands.of_corner(f, j));
    if (std::find(found, found + count, band) == found + count) found[count++] = band;
  }
  std::fill(found + count, found + kFootprintRows, -1);
}

// Adds the pixel's contributions to the texels of one band.
template <typename T>
void scatter_into_band(const PixelFootprint<T>& f, int channels, const RowBands& bands, int64_t band,
                       const T* grad_out, T* grad_levels) {
  for (int j = 0; j < 4 * f.count; ++j) {
    if (bands.of_corner(f, j) != band) continue;
    T* texel = grad_levels + f.element[j];
    for (int c = 0; c < channels; ++c) texel[c] += f.weight[j] * grad_out[c];
  }
}

template <typename T>
void backward_impl(const TextureInputs& in, const at::Tensor& grad_out, at::Tensor& grad_levels,
                   at::Tensor& grad_uv) {
  const SamplePixels<T> px = sample_pixels<T>(in);
  const MipPyramid& mips = in.mips;
  const T* levels = in.levels.data_ptr<T>();
  const T* grad = grad_out.data_ptr<T>();
  T* g_levels = grad_levels.defined() ? grad_levels.data_ptr<T>() : nullptr;
  T* g_uv = grad_uv.defined() ? grad_uv.data_ptr<T>() : nullptr;
  const int64_t pixels = px.batch * px.pixels_per_image;
  const int64_t chunk_size = std::max(kPixelGrain, (pixels + kMaxChunks - 1) / kMaxChunks);
  const int64_t chunks = (pixels + chunk_size - 1) / chunk_size;
  const RowBands bands(mips);
  auto pixels_of_chunk = [&](int64_t chunk) {
    return std::pair{chunk * chunk_size, std::min(pixels, (chunk + 1) * chunk_size)};
  };
  // The uv gradients; for the texture gradient, the bands each pixel touches and pixel counts
  // per (band, chunk), band-major and shifted by one, so that one running sum turns them into each
  // (band, chunk)'s first slot, with each band's slots in chunk (= pixel) order.
  std::vector<int32_t> pixel_bands(g_levels ? pixels * kFootprintRows : 0);
  std::vector<int64_t> slots(bands.count * chunks + 1, 0);
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const auto [first, last] = pixels_of_chunk(chunk);
      for (int64_t p = first; p < last; ++p) {
        const PixelFootprint<T> f = pixel_footprint(px, mips, p);
        if (g_uv) sample_pixel_uv_grad(f, mips, levels, grad + p * mips.channels, g_uv + 2 * p);
        if (!g_levels) continue;
        int32_t* found = pixel_bands.data() + p * kFootprintRows;
        footprint_bands(f, bands, found);
        for (int j = 0; j < kFootprintRows && found[j] >= 0; ++j) ++slots[found[j] * chunks + chunk + 1];
      }
    }
  });
  if (!g_levels) return;
  for (size_t i = 1; i < slots.size(); ++i) slots[i] += slots[i - 1];
  std::vector<int64_t> band_pixels(slots.back());
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const auto [first, last] = pixels_of_chunk(chunk);
      for (int64_t p = first; p < last; ++p) {
        const int32_t* found = pixel_bands.data() + p * kFootprintRows;
        for (int j = 0; j < kFootprintRows && found[j] >= 0; ++j) band_pixels[slots[found[j] * chunks + chunk]++] = p;
      }
    }
  });
  // Placing advanced each (band, chunk) start to the next one's, so band b's pixels now end at
  // slots[(b + 1) * chunks - 1] and start where band b - 1's end.
  at::parallel_for(0, bands.count, 1, [&](int64_t begin, int64_t end) {
    for (int64_t band = begin; band < end; ++band) {
      const int64_t first = band == 0 ? 0 : slots[band * chunks - 1], last = slots[(band + 1) * chunks - 1];
      for (int64_t r = first; r < last; ++r) {
        const int64_t p = band_pixels[r];
        scatter_into_band(pixel_footprint(px, mips, p), mips.channels, bands, band, grad + p * mips.channels, g_levels);
      }
    }
  });
}

}  // namespace

void texture_sample_forward_cpu(const TextureInputs& in, at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES(in.uv.scalar_type(), "texture_sample_forward_cpu",
                             [&] { forward_impl<scalar_t>(in, out); });
}

void texture_sample_backward_cpu(const TextureInputs& in, const at::Tensor& grad_out, at::Tensor& grad_levels,
                                 at::Tensor& grad_uv) {
  AT_DISPATCH_FLOATING_TYPES(in.uv.scalar_type(), "texture_sample_backward_cpu",
                             [&] { backward_impl<scalar_t>(in, grad_out, grad_levels, grad_uv); });
}

}  // namespace diffrender
