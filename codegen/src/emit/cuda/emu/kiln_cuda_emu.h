// kiln CUDA emulation: host C++ definitions of the CUDA built-ins kiln's generated
// kernels use, so the EXACT generated source compiles with g++ and runs on the CPU:
//   g++ -O2 -fwrapv -ffp-contract=off -I MODEL_SRC_DIR -I DIR_OF_THIS_FILE kiln_cuda_emu_main.cpp -o emu
// (kiln_cuda_emu_main.cpp includes this header, then model.cu.)
// The kernels use no shared memory and no synchronisation, so running every thread of
// every block one after the other (kiln_cuda_emu_main.cpp) computes what the GPU does.
#ifndef KILN_CUDA_EMU_H
#define KILN_CUDA_EMU_H

#include <cmath>
#include <cstring>

#define __global__
#define __device__
#define __constant__
#define __forceinline__ inline
#define __restrict__ __restrict

struct kiln_dim3 {
  unsigned int x, y, z;
};
// The launch coordinates of the thread being emulated.
static kiln_dim3 blockIdx, threadIdx, blockDim, gridDim;

// CUDA's built-in vector of four ints (the kernels' per-channel epilogue entries).
struct int4 {
  int x, y, z, w;
};

// Signed 4-way byte dot product with 32-bit accumulate, as the hardware's
// __dp4a(int, int, int): the bytes of a and b are sign-extended, multiplied pairwise and
// added to c with wrap-around.
static inline int __dp4a(int a, int b, int c) {
  unsigned int acc = (unsigned int)c;
  for (int i = 0; i < 4; ++i) {
    int x = (signed char)((unsigned int)a >> (8 * i));
    int y = (signed char)((unsigned int)b >> (8 * i));
    acc += (unsigned int)(x * y);
  }
  return (int)acc;
}

// Leading zeros of a 32-bit value (32 for 0), as CUDA's __clz.
static inline int __clz(int x) {
  return x == 0 ? 32 : __builtin_clz((unsigned int)x);
}

// The float with the bits of x, as CUDA's __int_as_float (non-finite literals).
static inline float __int_as_float(int x) {
  float f;
  std::memcpy(&f, &x, sizeof f);
  return f;
}

// One kernel launch of the generated launch table.
typedef void (*kiln_kernel_fn)(const unsigned char*, unsigned char*);
struct kiln_launch {
  kiln_kernel_fn kernel;
  unsigned int grid;
  unsigned int block;
};
// One graph input or output: arena offset of sample 0, bytes between samples, bytes
// per sample.
struct kiln_port {
  unsigned long long offset, stride, bytes;
};

#endif
