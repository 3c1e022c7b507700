// ---- kiln fixed-point arithmetic (TFLite Micro's, as kiln-runtime's quant.rs and
// fixed_point.rs): every function here is a line-by-line port, so the kernels below are
// bit-exact with kiln's CPU int8 kernels. Additions that the Rust code wraps are done on
// unsigned values (signed overflow is undefined in C).
#define KILN_I32_MIN (-2147483647 - 1)
#define KILN_I32_MAX 2147483647

__device__ __forceinline__ int kiln_wadd(int a, int b) {
  return (int)((unsigned int)a + (unsigned int)b);
}
__device__ __forceinline__ int kiln_wsub(int a, int b) {
  return (int)((unsigned int)a - (unsigned int)b);
}
__device__ __forceinline__ int kiln_wmul(int a, int b) {
  return (int)((unsigned int)a * (unsigned int)b);
}
__device__ __forceinline__ int kiln_clamp(int x, int lo, int hi) {
  return x < lo ? lo : (x > hi ? hi : x);
}

// gemmlowp SaturatingRoundingDoublingHighMul.
__device__ __forceinline__ int kiln_srdhm(int a, int b) {
  if (a == b && a == KILN_I32_MIN) return KILN_I32_MAX;
  long long ab = (long long)a * (long long)b;
  long long nudge = ab >= 0 ? (1LL << 30) : (1LL - (1LL << 30));
  return (int)((ab + nudge) / (1LL << 31));
}

// gemmlowp RoundingDivideByPOT (exponent clamped to [0, 62], computed in 64 bits).
__device__ __forceinline__ int kiln_rdbp(int x, int exponent) {
  int e = exponent < 0 ? 0 : (exponent > 62 ? 62 : exponent);
  long long v = (long long)x;
  long long mask = (1LL << e) - 1;
  long long remainder = v & mask;
  long long threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (int)((v >> e) + (remainder > threshold ? 1 : 0));
}

// gemmlowp SaturatingRoundingMultiplyByPOT with a run-time exponent.
__device__ __forceinline__ int kiln_srmbp(int x, int exponent) {
  if (exponent > 0) {
    if (exponent >= 31) return x > 0 ? KILN_I32_MAX : (x < 0 ? KILN_I32_MIN : 0);
    int threshold = (1 << (31 - exponent)) - 1;
    if (x > threshold) return KILN_I32_MAX;
    if (x < -threshold) return KILN_I32_MIN;
    return kiln_wmul(x, 1 << exponent);
  }
  if (exponent < 0) return kiln_rdbp(x, -exponent);
  return x;
}

// TFLM MultiplyByQuantizedMultiplier (double rounding).
__device__ __forceinline__ int kiln_mbqm(int x, int multiplier, int shift) {
  int left = shift > 0 ? shift : 0;
  int right = shift > 0 ? 0 : -shift;
  return kiln_rdbp(kiln_srdhm(kiln_wmul(x, (int)(1u << (left & 31))), multiplier), right);
}

// TFLM MultiplyByQuantizedMultiplierSmallerThanOneExp.
__device__ __forceinline__ int kiln_mbqm_small(int x, int multiplier, int left_shift) {
  return kiln_rdbp(kiln_srdhm(x, multiplier), -left_shift);
}

// TFLM MultiplyByQuantizedMultiplierGreaterThanOne.
__device__ __forceinline__ int kiln_mbqm_greater(int x, int multiplier, int left_shift) {
  int ls = left_shift > 0 ? left_shift : 0;
  return kiln_srdhm(kiln_wmul(x, (int)(1u << (ls & 31))), multiplier);
}

// TFLM int8 ADD of one pair (AddParams::add_one).
__device__ __forceinline__ int kiln_add_one(int x, int y, int off1, int off2, int out_off,
                                            int left_shift, int m1, int s1, int m2, int s2,
                                            int mo, int so, int lo, int hi) {
  int shifted1 = (off1 + x) * (1 << left_shift);
  int shifted2 = (off2 + y) * (1 << left_shift);
  int scaled1 = kiln_mbqm_small(shifted1, m1, s1);
  int scaled2 = kiln_mbqm_small(shifted2, m2, s2);
  int raw = kiln_wadd(kiln_mbqm_small(kiln_wadd(scaled1, scaled2), mo, so), out_off);
  return kiln_clamp(raw, lo, hi);
}

// ---- gemmlowp fixed-point exp / reciprocal (kiln-runtime fixed_point.rs)
__device__ __forceinline__ int kiln_rescale(int x, int src_bits, int dst_bits) {
  return kiln_srmbp(x, src_bits - dst_bits);
}

__device__ __forceinline__ int kiln_rounding_half_sum(int a, int b) {
  long long sum = (long long)a + (long long)b;
  long long sign = sum >= 0 ? 1 : -1;
  return (int)((sum + sign) / 2);
}

__device__ __forceinline__ int kiln_exp_quarter(int a) {
  const int constant_term = 1895147668;
  const int constant_1_over_3 = 715827883;
  int x = kiln_wadd(a, 1 << 28);
  int x2 = kiln_srdhm(x, x);
  int x3 = kiln_srdhm(x2, x);
  int x4 = kiln_srdhm(x2, x2);
  int x4_over_4 = kiln_rdbp(x4, 2);
  int poly = kiln_rdbp(kiln_wadd(kiln_srdhm(kiln_wadd(x4_over_4, x3), constant_1_over_3), x2), 1);
  return kiln_wadd(constant_term, kiln_srdhm(constant_term, kiln_wadd(x, poly)));
}

__device__ __forceinline__ int kiln_exp_on_negative_values(int a, int integer_bits) {
  int fractional_bits = 31 - integer_bits;
  int one_quarter = 1 << (fractional_bits - 2);
  int mask = one_quarter - 1;
  int a_mod_quarter_minus_one_quarter = kiln_wsub(a & mask, one_quarter);
  int result = kiln_exp_quarter(kiln_rescale(a_mod_quarter_minus_one_quarter, integer_bits, 0));
  int remainder = kiln_wsub(a_mod_quarter_minus_one_quarter, a);
  const int exponents[7] = {-2, -1, 0, 1, 2, 3, 4};
  const int multipliers[7] = {1672461947, 1302514674, 790015084, 290630308,
                              39332535, 720401, 242};
  for (int i = 0; i < 7; ++i) {
    if (integer_bits > exponents[i]) {
      int shift = fractional_bits + exponents[i];
      if (remainder & (int)(1u << (shift & 31))) result = kiln_srdhm(result, multipliers[i]);
    }
  }
  if (integer_bits > 5) {
    int clamp = -(1 << (36 - integer_bits));
    if (a < clamp) result = 0;
  }
  if (a == 0) result = KILN_I32_MAX;
  return result;
}

__device__ __forceinline__ int kiln_one_over_one_plus_x(int a) {
  const int c48_over_17 = 1515870810;
  const int cneg32_over_17 = -1010580540;
  int half_denominator = kiln_rounding_half_sum(a, KILN_I32_MAX);
  int one_q2 = 1 << 29;
  int x = kiln_wadd(c48_over_17, kiln_srdhm(half_denominator, cneg32_over_17));
  for (int i = 0; i < 3; ++i) {
    int half_denominator_times_x = kiln_srdhm(half_denominator, x);
    int one_minus = kiln_wsub(one_q2, half_denominator_times_x);
    x = kiln_wadd(x, kiln_rescale(kiln_srdhm(x, one_minus), 4, 2));
  }
  return kiln_rescale(x, 1, 0);
}

// TFLM GetReciprocal: returns the Q0.31 reciprocal, writes the extra exponent.
__device__ __forceinline__ int kiln_get_reciprocal(int x, int x_integer_digits,
                                                   int* num_bits_over_unit) {
  int headroom_plus_one = __clz(x);
  *num_bits_over_unit = x_integer_digits - headroom_plus_one;
  unsigned int shifted = headroom_plus_one < 32 ? ((unsigned int)x << headroom_plus_one) : 0u;
  int shifted_sum_minus_one = (int)(shifted - (1u << 31));
  return kiln_one_over_one_plus_x(shifted_sum_minus_one);
}

// ---- more of kiln-runtime's fixed-point kernels (fixed_point.rs, div.rs, logistic.rs)
__device__ __forceinline__ int kiln_newton_reciprocal_q2(int half_denominator) {
  const int c48_over_17 = 1515870810;
  const int cneg32_over_17 = -1010580540;
  const int one_q2 = 1 << 29;
  int x = kiln_wadd(c48_over_17, kiln_srdhm(half_denominator, cneg32_over_17));
  for (int i = 0; i < 3; ++i) {
    int half_denominator_times_x = kiln_srdhm(half_denominator, x);
    int one_minus = kiln_wsub(one_q2, half_denominator_times_x);
    x = kiln_wadd(x, kiln_rescale(kiln_srdhm(x, one_minus), 4, 2));
  }
  return x;
}

__device__ __forceinline__ int kiln_one_minus_x_over_one_plus_x(int a) {
  int x = kiln_newton_reciprocal_q2(kiln_rounding_half_sum(a, KILN_I32_MAX));
  return kiln_rescale(kiln_wsub(x, 1 << 29), 2, 0);
}

// gemmlowp logistic of a Q(integer_bits) value, Q0.31 result.
__device__ __forceinline__ int kiln_logistic_q(int a, int integer_bits) {
  if (a == 0) return 1 << 30;
  int abs_input = a > 0 ? a : kiln_wsub(0, a);
  int r = kiln_one_over_one_plus_x(kiln_exp_on_negative_values(kiln_wsub(0, abs_input), integer_bits));
  return a > 0 ? r : kiln_wsub(KILN_I32_MAX, r);
}

// gemmlowp tanh of a Q(integer_bits) value, Q0.31 result.
__device__ __forceinline__ int kiln_tanh_q(int a, int integer_bits) {
  if (a == 0) return 0;
  int n = a < 0 ? a : kiln_wsub(0, a);
  int t = kiln_one_minus_x_over_one_plus_x(kiln_exp_on_negative_values(n, integer_bits + 1));
  return a < 0 ? kiln_wsub(0, t) : t;
}

// int8 LOGISTIC / TANH of one element: rescale to Q4.27 (saturating outside the input
// radius), then the fixed-point function (logistic.rs, tanh.rs).
__device__ __forceinline__ int kiln_sigmoid_i8(int x, int zero_point, int radius, int multiplier,
                                               int left_shift, int is_tanh) {
  const int input = x - zero_point;
  if (input <= -radius) return -128;
  if (input >= radius) return 127;
  const int q4 = kiln_mbqm(input, multiplier, left_shift);
  if (is_tanh) return kiln_clamp(kiln_rdbp(kiln_tanh_q(q4, 4), 31 - 7), -128, 127);
  return kiln_clamp(kiln_rdbp(kiln_logistic_q(q4, 4), 31 - 8) - 128, -128, 127);
}

// TFLM's RoundingDivideByPOT as div.rs uses it (32-bit, shift taken modulo 32).
__device__ __forceinline__ int kiln_rdbp_tflm(int x, int exponent) {
  const unsigned int e = (unsigned int)exponent;
  const int mask = (int)(unsigned int)((1ull << (e & 63u)) - 1ull);
  const int remainder = x & mask;
  const int threshold = kiln_wadd(mask >> 1, x < 0 ? 1 : 0);
  return kiln_wadd(x >> (e & 31u), remainder > threshold ? 1 : 0);
}

// TFLM int8 DIV of one pair (DivParams::div_one), before the activation clamp.
__device__ __forceinline__ int kiln_div_one(int x, int y, int off1, int off2, int out_off,
                                            int multiplier, int shift) {
  int v1 = kiln_wadd(off1, x);
  int v2 = kiln_wadd(off2, y);
  if (v2 < 0) {
    v1 = kiln_wsub(0, v1);
    v2 = kiln_wsub(0, v2);
  }
  int recip_shift = 0;
  const int reciprocal = kiln_get_reciprocal(v2, 31, &recip_shift);
  const int headroom = __clz(v1 < 0 ? ~v1 : v1) - 1;
  const int unscaled = kiln_mbqm_greater(v1, reciprocal, headroom);
  const int total_shift = kiln_wsub(kiln_wsub(shift, recip_shift), headroom);
  const int scaled = kiln_rdbp_tflm(kiln_srdhm(unscaled, multiplier), kiln_wsub(0, total_shift));
  return kiln_wadd(scaled, out_off);
}

// TFLM int8 SUB of one pair (SubParams::sub_one).
__device__ __forceinline__ int kiln_sub_one(int x, int y, int off1, int off2, int out_off,
                                            int left_shift, int m1, int s1, int m2, int s2,
                                            int mo, int so, int lo, int hi) {
  int shifted1 = kiln_wmul(off1 + x, 1 << left_shift);
  int shifted2 = kiln_wmul(off2 + y, 1 << left_shift);
  int scaled1 = kiln_mbqm_small(shifted1, m1, s1);
  int scaled2 = kiln_mbqm_small(shifted2, m2, s2);
  int raw = kiln_wadd(kiln_mbqm_small(kiln_wsub(scaled1, scaled2), mo, so), out_off);
  return kiln_clamp(raw, lo, hi);
}

// TFLM int8 LEAKY_RELU of one element (LeakyReluParams::leaky_relu_one).
__device__ __forceinline__ int kiln_leaky_relu_one(int x, int in_zp, int out_zp, int mi, int si,
                                                   int ma, int sa) {
  const int v = kiln_wsub(x, in_zp);
  int scaled;
  if (v >= 0) {
    scaled = kiln_mbqm(v, mi, si);
  } else {
    const int product = kiln_mbqm(v, ma < 0 ? kiln_wsub(0, ma) : ma, sa);
    scaled = ma < 0 ? kiln_wsub(0, product) : product;
  }
  return kiln_clamp(kiln_wadd(out_zp, scaled), -128, 127);
}

// ---- float32 helpers (kiln-runtime's f32 reference kernels). Compile with contraction
// off (NVRTC --fmad=false, g++ -ffp-contract=off) so a*b+c rounds twice, as on the CPU.
// ActivationRangeF32::apply: min(max(x, lo), hi), NaN passing through.
__device__ __forceinline__ float kiln_fclamp(float x, float lo, float hi) {
  const float l = x < lo ? lo : x;
  return hi < l ? hi : l;
}

// Rust's `f32 as i32`: saturating, NaN to 0.
__device__ __forceinline__ int kiln_f2i_sat(float x) {
  if (x != x) return 0;
  if (x >= 2147483648.0f) return KILN_I32_MAX;
  if (x < -2147483648.0f) return KILN_I32_MIN;
  return (int)x;
}

// i32::saturating_add.
__device__ __forceinline__ int kiln_sat_add(int a, int b) {
  const long long s = (long long)a + (long long)b;
  return s > KILN_I32_MAX ? KILN_I32_MAX : (s < KILN_I32_MIN ? KILN_I32_MIN : (int)s);
}

// f32 LOGISTIC of one element (logistic.rs).
__device__ __forceinline__ float kiln_logistic_f32(float x) {
  if (x > 16.619047f) return 1.0f;
  if (x < -9.0f) return expf(x);
  return 1.0f / (1.0f + expf(-x));
}
