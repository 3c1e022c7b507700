// Kernel-level golden cases for kiln-runtime, produced by TFLM's own reference kernels.
// Build (from a tflite-micro checkout at 90b983c, gemmlowp for fixedpoint/, and a stub
// ruy/profiler/instrumentation.h defining an empty ruy::profiler::ScopeLabel):
//   g++ -std=c++17 -O1 -I<tflm> -I<gemmlowp> -I<stub> gen.cc \
//     <tflm>/tensorflow/lite/kernels/internal/{quantization_util,common,runtime_shape}.cc -o gen
//   ./gen > tflm_cases.txt
// The random seed is fixed, so the output is reproducible.
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>
#include "tensorflow/lite/kernels/internal/common.h"
#include "tensorflow/lite/kernels/internal/quantization_util.h"
#include "tensorflow/lite/kernels/internal/reference/softmax.h"
#include "tensorflow/lite/kernels/internal/reference/integer_ops/logistic.h"
#include "tensorflow/lite/kernels/internal/reference/integer_ops/tanh.h"
#include "tensorflow/lite/kernels/internal/reference/integer_ops/add.h"
#include "tensorflow/lite/kernels/internal/reference/integer_ops/mul.h"
#include "tensorflow/lite/kernels/internal/reference/integer_ops/conv.h"
#include "tensorflow/lite/kernels/internal/reference/integer_ops/pooling.h"
#include "tensorflow/lite/kernels/internal/reference/reduce.h"
#include "tensorflow/lite/kernels/internal/reference/quantize.h"
using namespace tflite;
RuntimeShape RS(std::initializer_list<int32_t> d){ std::vector<int32_t> v(d); return RuntimeShape((int)v.size(), v.data()); }
std::mt19937 rng(1234);
float uf(float lo, float hi){ return std::uniform_real_distribution<float>(lo,hi)(rng);}
int ui(int lo, int hi){ return std::uniform_int_distribution<int>(lo,hi)(rng);}
float logu(float lo, float hi){ return std::exp(uf(std::log(lo), std::log(hi)));}
int main(){
  // QuantizeMultiplier
  for(int i=0;i<600;i++){ double r = (i%3==0)? std::ldexp(uf(0.5,1.0), ui(-40,20)) : (double)logu(1e-12f, 1e4f)*uf(0.5,2);
    if(i==0) r = 1.0 - 1e-12; if(i==1) r = std::ldexp(1.0,-33);
    int32_t m; int s; QuantizeMultiplier(r,&m,&s); printf("QM %.17g %d %d\n", r, m, s);
    int32_t x = ui(-100000,100000); if (s <= 20) printf("MBQM %d %d %d %d\n", x, m, s, MultiplyByQuantizedMultiplier(x,m,s)); }
  // Softmax
  for(int t=0;t<150;t++){
    float beta = (t%4==0)?1.0f:uf(0.1f,3.0f); float sc = logu(0.001f, 1.0f);
    SoftmaxParams p; int shift; PreprocessSoftmaxScaling((double)beta,(double)sc,5,&p.input_multiplier,&shift);
    p.input_left_shift = shift; p.diff_min = -1.0 * CalculateInputRadius(5, shift);
    int depth = ui(1,20); std::vector<int8_t> in(depth), out(depth);
    for(auto&v:in) v=ui(-128,127);
    RuntimeShape sh = RS({1,depth});
    reference_ops::Softmax(p, sh, in.data(), sh, out.data());
    printf("SM %.9g %.9g %d", beta, sc, depth); for(auto v:in) printf(" %d",v); for(auto v:out) printf(" %d",v); printf("\n");
  }
  // Logistic & tanh
  for(int t=0;t<60;t++){
    float sc = logu(0.0005f, 0.5f); int zp = ui(-128,127);
    double real = (double)sc * (double)(1 << 27); int shift; double q = std::frexp(real,&shift);
    int32_t mult = (int32_t)TfLiteRound(q*(1ll<<31)); int radius = CalculateInputRadius(4, shift, 31);
    std::vector<int8_t> in(256), out(256), out2(256); for(int i=0;i<256;i++) in[i]=i-128;
    reference_integer_ops::Logistic(zp, radius, mult, shift, 256, in.data(), out.data());
    RuntimeShape sh = RS({256});
    reference_integer_ops::Tanh(zp, radius, mult, shift, sh, in.data(), sh, out2.data());
    printf("LG %.9g %d", sc, zp); for(auto v:out) printf(" %d",v); printf("\n");
    printf("TH %.9g %d", sc, zp); for(auto v:out2) printf(" %d",v); printf("\n");
  }
  // Add / Mul
  for(int t=0;t<150;t++){
    float s1=logu(0.001f,1), s2=logu(0.001f,1), so=logu(0.002f,2); int z1=ui(-128,127), z2=ui(-128,127), zo=ui(-128,127);
    ArithmeticParams p{}; p.input1_offset=-z1; p.input2_offset=-z2; p.output_offset=zo; p.left_shift=20;
    double tw = 2*(double)std::max(s1,s2);
    QuantizeMultiplierSmallerThanOneExp((double)s1/tw,&p.input1_multiplier,&p.input1_shift);
    QuantizeMultiplierSmallerThanOneExp((double)s2/tw,&p.input2_multiplier,&p.input2_shift);
    QuantizeMultiplierSmallerThanOneExp(tw/((1<<20)*(double)so),&p.output_multiplier,&p.output_shift);
    p.quantized_activation_min=-128; p.quantized_activation_max=127;
    printf("AD %.9g %d %.9g %d %.9g %d", s1,z1,s2,z2,so,zo);
    for(int k=0;k<20;k++){ int8_t x=ui(-128,127), y=ui(-128,127); printf(" %d %d %d",x,y,reference_integer_ops::AddFunc(x,y,p)); }
    printf("\n");
    ArithmeticParams m{}; m.input1_offset=-z1; m.input2_offset=-z2; m.output_offset=zo; m.quantized_activation_min=-128; m.quantized_activation_max=127;
    QuantizeMultiplier((double)s1*(double)s2/(double)so,&m.output_multiplier,&m.output_shift);
    printf("MU %.9g %d %.9g %d %.9g %d", s1,z1,s2,z2,so,zo);
    for(int k=0;k<20;k++){ int8_t x=ui(-128,127), y=ui(-128,127), o; RuntimeShape one = RS({1});
      reference_integer_ops::Mul(m, one, &x, one, &y, one, &o); printf(" %d %d %d",x,y,o);} printf("\n");
  }
  // Mean over axes 1,2 of [1,H,W,C]
  for(int t=0;t<100;t++){
    int H=ui(1,9), W=ui(1,9), C=ui(1,4); float si=logu(0.001f,1), so=logu(0.001f,1); int zi=ui(-128,127), zo=ui(-128,127);
    if(t%3==0){so=si; zo=zi;}
    int32_t mult; int shift; QuantizeMultiplier((double)si/(double)so,&mult,&shift);
    std::vector<int8_t> in(H*W*C), out(C); for(auto&v:in) v=ui(-128,127);
    int idims[4]={1,H,W,C}, odims[4]={1,1,1,C}, axis[2]={1,2}, iter[4], res[2]; std::vector<int32_t> tmp(C);
    reference_ops::QuantizedMeanOrSum<int8_t,int32_t>(in.data(), zi, idims, 4, out.data(), mult, shift, zo, odims, 4, axis, 2, true, iter, res, tmp.data(), false);
    printf("ME %d %d %d %.9g %d %.9g %d", H,W,C,si,zi,so,zo); for(auto v:in) printf(" %d",v); for(auto v:out) printf(" %d",v); printf("\n");
  }
  // AffineQuantize
  for(int t=0;t<200;t++){
    float sc=logu(0.001f,1); int zp=ui(-128,127); QuantizationParams qp; qp.scale=sc; qp.zero_point=zp;
    float x = uf(-200,200)*sc; if(t%5==0) x = (ui(-300,300)+0.5f)*sc; int8_t o; RuntimeShape one = RS({1});
    reference_ops::AffineQuantize(qp, one, &x, one, &o);
    printf("AQ %.9g %d %.9g %d\n", sc, zp, x, o);
  }
  // Conv per channel: [1,H,W,Cin] x [Cout,3,3,Cin], stride 1, SAME padding 1, + avg pool 3x3 same
  for(int t=0;t<40;t++){
    int H=ui(2,6), W=ui(2,6), Ci=ui(1,3), Co=ui(1,4); float si=logu(0.005f,0.1f), so=logu(0.01f,0.5f); int zi=ui(-128,127), zo=ui(-128,127);
    std::vector<float> fs(Co); for(auto&v:fs) v=logu(0.001f,0.05f);
    std::vector<int32_t> mul(Co), sh(Co);
    for(int c=0;c<Co;c++){ int s; QuantizeMultiplier((double)si*(double)fs[c]/(double)so,&mul[c],&s); sh[c]=s; }
    std::vector<int8_t> in(H*W*Ci), f(Co*9*Ci), out(H*W*Co), pout(H*W*Ci); std::vector<int32_t> b(Co);
    for(auto&v:in) v=ui(-128,127); for(auto&v:f) v=ui(-127,127); for(auto&v:b) v=ui(-2000,2000);
    ConvParams cp{}; cp.input_offset=-zi; cp.output_offset=zo; cp.stride_width=cp.stride_height=1; cp.dilation_width_factor=cp.dilation_height_factor=1;
    cp.padding_values.width=1; cp.padding_values.height=1; cp.quantized_activation_min=-128; cp.quantized_activation_max=127;
    reference_integer_ops::ConvPerChannel(cp, mul.data(), sh.data(), RS({1,H,W,Ci}), in.data(), RS({Co,3,3,Ci}), f.data(), RS({Co}), b.data(), RS({1,H,W,Co}), out.data());
    PoolParams pp{}; pp.stride_height=pp.stride_width=1; pp.filter_height=pp.filter_width=3; pp.padding_values.height=pp.padding_values.width=1; pp.quantized_activation_min=-128; pp.quantized_activation_max=127;
    reference_integer_ops::AveragePool(pp, RS({1,H,W,Ci}), in.data(), RS({1,H,W,Ci}), pout.data());
    printf("CV %d %d %d %d %.9g %d %.9g %d", H,W,Ci,Co,si,zi,so,zo); for(auto v:fs) printf(" %.9g",v);
    for(auto v:in) printf(" %d",v); for(auto v:f) printf(" %d",v); for(auto v:b) printf(" %d",v); for(auto v:out) printf(" %d",v); for(auto v:pout) printf(" %d",v); printf("\n");
  }
}
