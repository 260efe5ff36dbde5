// CPU scheduling helpers shared by the kernels (torch-facing, CPU only).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace diffrender {

// at::parallel_for hands each thread one contiguous block. Image content is rarely uniform, so
// blocks of neighbouring rows would leave one thread idle; this deals item i out round-robin
// instead, calling body(item, scratch) with scratch made once per thread by make_scratch().
// Each item is processed exactly once by one thread, so results never depend on the thread count
// as long as the scratch carries nothing from one item to the next.
template <typename MakeScratch, typename F>
void parallel_for_interleaved_with_scratch(int64_t count, const MakeScratch& make_scratch, const F& body) {
  if (count <= 0) return;
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), count));
  const int64_t chunk = (count + threads - 1) / threads;
  at::parallel_for(0, chunk * threads, 1, [&](int64_t begin, int64_t end) {
    auto scratch = make_scratch();
    for (int64_t i = begin; i < end; ++i) {
      const int64_t item = (i % chunk) * threads + i / chunk;
      if (item < count) body(item, scratch);
    }
  });
}

template <typename F>
void parallel_for_interleaved(int64_t count, const F& body) {
  parallel_for_interleaved_with_scratch(count, [] { return 0; }, [&](int64_t item, int) { body(item); });
}

}  // namespace diffrender
