// kiln CUDA emulation driver: runs a generated model.cu on the CPU, serially.
//   emu WEIGHTS.bin IN_0.bin [IN_1.bin ...] OUT_0.bin [OUT_1.bin ...]
// Each IN file holds KILN_BATCH samples of that input back to back (raw little-endian
// element bytes); each OUT file receives KILN_BATCH samples of that output. Exit status
// 0 on success, 2 on bad arguments or files. It includes the generated model.cu itself:
//   g++ -O2 -fwrapv -ffp-contract=off -I MODEL_SRC_DIR -I DIR_OF_THIS_FILE kiln_cuda_emu_main.cpp -o emu
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kiln_cuda_emu.h"

#define KILN_CUDA_EMULATION 1
#include "model.cu"

static bool read_file(const char* path, std::vector<unsigned char>& out) {
  FILE* f = std::fopen(path, "rb");
  if (!f) return false;
  unsigned char buf[1 << 16];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, f)) > 0) out.insert(out.end(), buf, buf + got);
  std::fclose(f);
  return true;
}

int main(int argc, char** argv) {
  size_t n_in = 0, n_out = 0;
  while (KILN_INPUTS[n_in].bytes) ++n_in;
  while (KILN_OUTPUTS[n_out].bytes) ++n_out;
  if ((size_t)argc != 2 + n_in + n_out) {
    std::fprintf(stderr, "usage: %s WEIGHTS.bin %zu input file(s) %zu output file(s)\n", argv[0],
                 n_in, n_out);
    return 2;
  }
  std::vector<unsigned char> weights;
  if (!read_file(argv[1], weights) || weights.size() != KILN_WEIGHT_BYTES) {
    std::fprintf(stderr, "%s: expected %llu bytes of weights\n", argv[1], KILN_WEIGHT_BYTES);
    return 2;
  }
  // 16-byte aligned copies, as cudaMalloc'd buffers are (the kernels load 4-byte words).
  unsigned long long* w16 = (unsigned long long*)std::calloc(weights.size() / 8 + 2, 8);
  unsigned long long* a16 = (unsigned long long*)std::calloc(KILN_ARENA_BYTES / 8 + 2, 8);
  if (!w16 || !a16) return 2;
  unsigned char* W = (unsigned char*)w16;
  unsigned char* A = (unsigned char*)a16;
  std::memcpy(W, weights.data(), weights.size());
  for (size_t i = 0; i < n_in; ++i) {
    std::vector<unsigned char> x;
    const kiln_port& p = KILN_INPUTS[i];
    if (!read_file(argv[2 + i], x) || x.size() != p.bytes * KILN_BATCH) {
      std::fprintf(stderr, "%s: expected %llu bytes (%llu samples)\n", argv[2 + i],
                   p.bytes * KILN_BATCH, KILN_BATCH);
      return 2;
    }
    for (unsigned long long n = 0; n < KILN_BATCH; ++n)
      std::memcpy(A + p.offset + n * p.stride, x.data() + n * p.bytes, p.bytes);
  }
  for (const kiln_launch* l = KILN_LAUNCHES; l->kernel; ++l) {
    gridDim.x = l->grid;
    blockDim.x = l->block;
    gridDim.y = gridDim.z = blockDim.y = blockDim.z = 1;
    for (unsigned int b = 0; b < l->grid; ++b)
      for (unsigned int t = 0; t < l->block; ++t) {
        blockIdx.x = b;
        threadIdx.x = t;
        l->kernel(W, A);
      }
  }
  for (size_t j = 0; j < n_out; ++j) {
    const kiln_port& p = KILN_OUTPUTS[j];
    FILE* f = std::fopen(argv[2 + n_in + j], "wb");
    if (!f) return 2;
    for (unsigned long long n = 0; n < KILN_BATCH; ++n)
      std::fwrite(A + p.offset + n * p.stride, 1, p.bytes, f);
    std::fclose(f);
  }
  std::free(w16);
  std::free(a16);
  return 0;
}
