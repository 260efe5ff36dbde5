// CPU scheduling of Phong backward passes. Gradients of the per-batch inputs (eye, lights,
// ambient) are summed per fixed block of items, then over the blocks in order, so the bits do not
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

// Calls shade_block(image, first, last, partials) for blocks of items [first, last) (points or
// triangles) of one image, in parallel, then adds the blocks' partial sums into the per-batch
// gradients in block order.
// grad_eye, grad_ambient: [B,3]; grad_light_positions, grad_light_intensities: [B,L,3].
template <typename T, typename ShadeBlock>
void phong_backward_in_blocks(int64_t batch, int64_t items, int64_t lights, int64_t block_size, T* grad_eye,
                              T* grad_light_positions, T* grad_light_intensities, T* grad_ambient,
                              const ShadeBlock& shade_block) {
  const int64_t blocks_per_image = (items + block_size - 1) / block_size;
  const int64_t partial_size = 6 + 6 * lights;  // eye, light positions, light intensities, ambient
  // Every point adds into its block's partials: a cache line of padding between blocks keeps
  // threads working on neighbouring blocks from invalidating each other's line on every add.
  const int64_t line = 64 / sizeof(T);
  const int64_t partial_stride = (partial_size + line - 1) / line * line + line;
  std::vector<T> partials(batch * blocks_per_image * partial_stride, T(0));
  auto partials_of = [&](int64_t block) {
    T* base = partials.data() + block * partial_stride;
    return PhongPartials<T>{base, base + 3, base + 3 + 3 * lights, base + 3 + 6 * lights};
  };
  // Work clusters (covered pixels in the middle of images): interleaved blocks balance it.
  parallel_for_interleaved(batch * blocks_per_image, [&](int64_t block) {
    const int64_t image = block / blocks_per_image;
    const int64_t first = image * items + (block % blocks_per_image) * block_size;
    const int64_t last = std::min(first + block_size, (image + 1) * items);
    shade_block(image, first, last, partials_of(block));
  });
  for (int64_t block = 0; block < batch * blocks_per_image; ++block) {
    const int64_t image = block / blocks_per_image;
    const PhongPartials<T> partial = partials_of(block);
    for (int c = 0; c < 3; ++c) {
      grad_eye[3 * image + c] += partial.eye[c];
      grad_ambient[3 * image + c] += partial.ambient[c];
    }
    for (int64_t k = 0; k < 3 * lights; ++k) {
      grad_light_positions[3 * lights * image + k] += partial.light_positions[k];
      grad_light_intensities[3 * lights * image + k] += partial.light_intensities[k];
    }
  }
}

}  // namespace diffrender
