// CPU scheduling of Phong backward passes. Gradients of the per-batch inputs (eye, lights,
// ambient) are summed per fixed block of work, then over the blocks in order, so the bits do not
// depend on the thread count.
#pragma once

#include "common/parallel.h"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace diffrender {

// Where one block accumulates its per-batch gradients.
template <typename T>
struct PhongPartials {
  T *eye, *light_positions, *light_intensities, *ambient;
};

// One set of partial sums per block; block k belongs to image k / blocks_per_image.
template <typename T>
class PhongPartialBlocks {
 public:
  PhongPartialBlocks(int64_t blocks, int64_t blocks_per_image, int64_t lights)
      : blocks_(blocks), blocks_per_image_(blocks_per_image), lights_(lights), stride_(padded_stride(lights)),
        values_(blocks * stride_, T(0)) {}

  PhongPartials<T> of(int64_t block) {
    T* base = values_.data() + block * stride_;
    return {base, base + 3, base + 3 + 3 * lights_, base + 3 + 6 * lights_};
  }

  // grad_eye, grad_ambient: [B,3]; grad_light_positions, grad_light_intensities: [B,L,3].
  void add_in_block_order(T* grad_eye, T* grad_light_positions, T* grad_light_intensities, T* grad_ambient) {
    for (int64_t block = 0; block < blocks_; ++block) {
      const int64_t image = block / blocks_per_image_;
      const PhongPartials<T> partial = of(block);
      for (int c = 0; c < 3; ++c) {
        grad_eye[3 * image + c] += partial.eye[c];
        grad_ambient[3 * image + c] += partial.ambient[c];
      }
      for (int64_t k = 0; k < 3 * lights_; ++k) {
        grad_light_positions[3 * lights_ * image + k] += partial.light_positions[k];
        grad_light_intensities[3 * lights_ * image + k] += partial.light_intensities[k];
      }
    }
  }

 private:
  // Every point adds into its block's partials: a cache line of padding between blocks keeps
  // threads working on neighbouring blocks from invalidating each other's line on every add.
  static int64_t padded_stride(int64_t lights) {
    const int64_t size = 6 + 6 * lights;  // eye, light positions, light intensities, ambient
    const int64_t line = 64 / sizeof(T);
    return (size + line - 1) / line * line + line;
  }

  int64_t blocks_, blocks_per_image_, lights_, stride_;
  std::vector<T> values_;
};

// Calls shade_block(image, first, last, partials) for blocks of items [first, last) (points) of
// one image, in parallel, then adds the blocks' partial sums into the per-batch gradients.
template <typename T, typename ShadeBlock>
void phong_backward_in_blocks(int64_t batch, int64_t items, int64_t lights, int64_t block_size, T* grad_eye,
                              T* grad_light_positions, T* grad_light_intensities, T* grad_ambient,
                              const ShadeBlock& shade_block) {
  const int64_t blocks_per_image = (items + block_size - 1) / block_size;
  PhongPartialBlocks<T> partials(batch * blocks_per_image, blocks_per_image, lights);
  // Work clusters (covered pixels in the middle of images): interleaved blocks balance it.
  parallel_for_interleaved(batch * blocks_per_image, [&](int64_t block) {
    const int64_t image = block / blocks_per_image;
    const int64_t first = image * items + (block % blocks_per_image) * block_size;
    const int64_t last = std::min(first + block_size, (image + 1) * items);
    shade_block(image, first, last, partials.of(block));
  });
  partials.add_in_block_order(grad_eye, grad_light_positions, grad_light_intensities, grad_ambient);
}

}  // namespace diffrender
