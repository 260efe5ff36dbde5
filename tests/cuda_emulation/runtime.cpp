// The emulated CUDA runtime's scheduler (see include/cuda_runtime.h): blocks one after another,
// the threads of a block as ucontext fibers that switch at __syncthreads.
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <stdexcept>
#include <vector>

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/common_interface_defs.h>
#endif

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "cuda_runtime.h"

namespace cuda_emulation {
namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr int64_t kMaxThreadsPerBlock = 1024;

uint64_t g_schedule = 0;
Counters g_counters;
cudaError_t g_error = cudaSuccess;

// The stacks of one block's fibers, each above a guard page so that an overflow faults.
class Stacks {
 public:
  explicit Stacks(int64_t count) : count_(count), stride_(kStackBytes + page()) {
    void* memory = mmap(nullptr, count_ * stride_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) throw std::runtime_error("cuda emulation: cannot map fiber stacks");
    base_ = static_cast<char*>(memory);
    for (int64_t i = 0; i < count_; ++i) mprotect(base_ + i * stride_, page(), PROT_NONE);
  }
  ~Stacks() { munmap(base_, count_ * stride_); }
  Stacks(const Stacks&) = delete;
  Stacks& operator=(const Stacks&) = delete;
  char* stack(int64_t i) const { return base_ + i * stride_ + page(); }

 private:
  static size_t page() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }
  int64_t count_;
  size_t stride_;
  char* base_ = nullptr;
};

struct Fiber {
  ucontext_t context;
  uint3 index;
  bool done = false;
  void* stack = nullptr;
  void* fake_stack = nullptr;  // AddressSanitizer's, while the fiber is switched out
};

struct Block {
  ucontext_t scheduler;
  std::vector<Fiber> fibers;
  int64_t current = 0;
  bool plain = false;  // threads run as plain calls, without fibers
  const std::function<void()>* body = nullptr;
  const void* scheduler_stack = nullptr;  // for AddressSanitizer's fiber annotations
  size_t scheduler_stack_bytes = 0;
};

thread_local Block* t_block = nullptr;

// The switches, announced to AddressSanitizer (when built with it) so that it tracks which stack
// is live; a fiber that ends passes a null fake-stack slot, which frees its fake stack.
#ifdef __SANITIZE_ADDRESS__
void leave(void** fake_stack, const void* to, size_t bytes) { __sanitizer_start_switch_fiber(fake_stack, to, bytes); }
void arrive(void* fake_stack, const void** from, size_t* bytes) {
  __sanitizer_finish_switch_fiber(fake_stack, from, bytes);
}
#else
void leave(void**, const void*, size_t) {}
void arrive(void*, const void**, size_t*) {}
#endif

void fiber_main() {
  Block* block = t_block;
  arrive(nullptr, &block->scheduler_stack, &block->scheduler_stack_bytes);
  (*block->body)();
  block->fibers[block->current].done = true;
  leave(nullptr, block->scheduler_stack, block->scheduler_stack_bytes);
  // uc_link returns to the scheduler.
}

void run_fiber(Block& block, int64_t i) {
  Fiber& fiber = block.fibers[i];
  threadIdx = fiber.index;
  block.current = i;
  void* fake_stack = nullptr;
  leave(&fake_stack, fiber.stack, kStackBytes);
  swapcontext(&block.scheduler, &fiber.context);
  arrive(fake_stack, nullptr, nullptr);
}

std::vector<int64_t> order(int64_t count, uint64_t salt) {
  std::vector<int64_t> result(count);
  std::iota(result.begin(), result.end(), 0);
  if (g_schedule == 1) {
    std::reverse(result.begin(), result.end());
  } else if (g_schedule > 1) {
    std::mt19937_64 random(g_schedule * 0x9E3779B97F4A7C15ull + salt);
    std::shuffle(result.begin(), result.end(), random);
  }
  return result;
}

void start_fiber(Block& block, const Stacks& stacks, int64_t i) {
  Fiber& fiber = block.fibers[i];
  fiber.done = false;
  getcontext(&fiber.context);
  fiber.stack = stacks.stack(i);
  fiber.context.uc_stack.ss_sp = fiber.stack;
  fiber.context.uc_stack.ss_size = kStackBytes;
  fiber.context.uc_link = &block.scheduler;
  makecontext(&fiber.context, fiber_main, 0);
}

void run_block(Block& block, const Stacks& stacks, uint64_t salt) {
  const int64_t count = static_cast<int64_t>(block.fibers.size());
  const std::vector<int64_t> schedule = order(count, salt);
  // The first thread runs on a fiber. A block's barriers are the same for all its threads (CUDA
  // requires it), so when the first thread ends without one, the others need no fibers: they run
  // as plain calls, and one that reaches a barrier is a divergent __syncthreads.
  start_fiber(block, stacks, schedule[0]);
  run_fiber(block, schedule[0]);
  if (block.fibers[schedule[0]].done) {
    block.plain = true;
    for (int64_t k = 1; k < count; ++k) {
      block.current = schedule[k];
      threadIdx = block.fibers[schedule[k]].index;
      (*block.body)();
    }
    block.plain = false;
    return;
  }
  for (int64_t k = 1; k < count; ++k) start_fiber(block, stacks, schedule[k]);
  // Each round runs every live thread up to its next barrier or its end (the first thread has
  // already run its part of round one). Threads that have ended count as arrived, as on Volta and
  // later.
  for (int64_t first = 1;; first = 0) {
    bool live = first == 1;  // the first thread waits at a barrier after round one's part
    for (int64_t k = first; k < count; ++k) {
      Fiber& fiber = block.fibers[schedule[k]];
      if (fiber.done) continue;
      run_fiber(block, schedule[k]);
      live = live || !fiber.done;
    }
    if (!live) break;
    ++g_counters.barriers;
  }
}

}  // namespace

void set_schedule(uint64_t schedule) { g_schedule = schedule; }
uint64_t schedule() { return g_schedule; }
Counters& counters() { return g_counters; }

void set_error(cudaError_t error) { g_error = error; }

cudaError_t take_error() {
  const cudaError_t error = g_error;
  g_error = cudaSuccess;
  return error;
}

void sync_threads() {
  Block* block = t_block;
  if (!block) throw std::logic_error("cuda emulation: __syncthreads outside a kernel");
  if (block->plain)
    throw std::logic_error("cuda emulation: divergent __syncthreads (the block's first thread ended without it)");
  Fiber& fiber = block->fibers[block->current];
  leave(&fiber.fake_stack, block->scheduler_stack, block->scheduler_stack_bytes);
  swapcontext(&fiber.context, &block->scheduler);
  arrive(fiber.fake_stack, nullptr, nullptr);
}

void run_grid(const LaunchConfig& config, const std::function<void()>& body) {
  const dim3 grid = config.grid, block_dim = config.block;
  const int64_t threads = int64_t(block_dim.x) * block_dim.y * block_dim.z;
  // CUDA's limits: a non-empty grid, x < 2^31, y and z < 2^16, at most 1024 threads, z ≤ 64.
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7FFFFFFFu || grid.y > 65535 || grid.z > 65535 ||
      threads == 0 || threads > kMaxThreadsPerBlock || block_dim.z > 64) {
    set_error(cudaErrorInvalidConfiguration);
    return;
  }
  if (t_block) throw std::logic_error("cuda emulation: kernel launched from a kernel");
  ++g_counters.launches;
  gridDim = grid;
  blockDim = block_dim;
  Stacks stacks(threads);
  Block block;
  block.body = &body;
  block.fibers.resize(threads);
  for (int64_t i = 0; i < threads; ++i)
    block.fibers[i].index = {unsigned(i % block_dim.x), unsigned(i / block_dim.x % block_dim.y),
                             unsigned(i / (int64_t(block_dim.x) * block_dim.y))};
  const int64_t blocks = int64_t(grid.x) * grid.y * grid.z;
  t_block = &block;
  try {
    for (int64_t b : order(blocks, 0)) {
      blockIdx = {unsigned(b % grid.x), unsigned(b / grid.x % grid.y), unsigned(b / (int64_t(grid.x) * grid.y))};
      run_block(block, stacks, uint64_t(b) + 1);
      ++g_counters.blocks;
    }
  } catch (...) {
    t_block = nullptr;
    throw;
  }
  t_block = nullptr;
}

}  // namespace cuda_emulation

namespace {

// Kernels for the emulation's own tests.

void record_order(int64_t* cursor, int64_t* order) {
  const int64_t thread = (int64_t(blockIdx.x) * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  order[atomicAdd(cursor, int64_t(1))] = thread;
}

// Each thread reads its neighbour's shared slot, with or without a barrier between the write and
// the read.
void rotate_through_shared(bool barrier, int64_t* out) {
  __shared__ int64_t slots[1024];
  const unsigned lane = threadIdx.x, n = blockDim.x;
  slots[lane] = int64_t(blockIdx.x) * n + lane;
  if (barrier) __syncthreads();
  out[int64_t(blockIdx.x) * n + lane] = slots[(lane + 1) % n];
}

void do_nothing() {}

void barrier_unless_first_lane() {
  if (threadIdx.x > 0) __syncthreads();
}

}  // namespace

void bind_cuda_emulation(pybind11::module_& m) {
  m.def("set_schedule", &cuda_emulation::set_schedule,
        "order of the emulated threads, blocks and atomics: 0 forward, 1 reverse, else a shuffle seed");
  m.def("schedule", &cuda_emulation::schedule);
  m.def("counters", [] {
    const cuda_emulation::Counters& c = cuda_emulation::counters();
    return std::make_tuple(c.launches, c.blocks, c.barriers);
  }, "(kernel launches, blocks, block-wide barriers) run so far");
  m.def("launch_order", [](unsigned blocks, unsigned threads_x, unsigned threads_y) {
    std::vector<int64_t> order(int64_t(blocks) * threads_x * threads_y, -1);
    int64_t cursor = 0;
    cuda_emulation::launch(cuda_emulation::config(blocks, dim3(threads_x, threads_y)), record_order, &cursor,
                           order.data());
    return order;
  }, "the linear ids of a grid's threads in the order they ran");
  m.def("rotate_through_shared", [](unsigned blocks, unsigned threads, bool barrier) {
    std::vector<int64_t> out(int64_t(blocks) * threads, -1);
    cuda_emulation::launch(cuda_emulation::config(blocks, threads), rotate_through_shared, barrier, out.data());
    return out;
  });
  m.def("divergent_barrier", [](unsigned threads) {
    cuda_emulation::launch(cuda_emulation::config(1, threads), barrier_unless_first_lane);
  }, "a kernel whose first lane skips the barrier the others reach");
  m.def("launch_status", [](unsigned blocks, unsigned threads_x, unsigned threads_y, unsigned threads_z) {
    cuda_emulation::launch(cuda_emulation::config(blocks, dim3(threads_x, threads_y, threads_z)), do_nothing);
    return int(cudaGetLastError());
  }, "cudaGetLastError after an empty kernel's launch with this configuration");
}
