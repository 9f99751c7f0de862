// tfrnn's fused recurrence for CPUs: a whole sequence of SimpleRNN, GRU (reset_after) or LSTM
// steps in one TensorFlow op, and its gradient (backpropagation through time) in another.
//
// The input projection x W + b is computed outside (one large product over all steps), and so
// are the weight gradients (one product over all steps after the loop, tfrnn.kernel): these ops
// run only the recurrence, batch rows split across TensorFlow's CPU threads. The recurrent
// kernel does not change inside a sequence, so it is packed once per op into column panels
// (U for the forward pass, U^T for the backward), and each step's product of a few rows by it is
// a register-blocked micro-kernel over those panels (PackedAdd): no repacking per step, as a
// general matrix product (Eigen's) does on every call. The micro-kernel is written with the
// compiler's vector extensions, so it is AVX-512, AVX2, SSE or NEON code as the CPU it is
// compiled on has (tfrnn/kernel.py builds it there with -march=native). Gate orders and formulas are Keras':
// with x W the input projection (xp), bx its bias and bu the recurrent bias:
//   rnn:  h = tanh(xp + bx + h U + bu)
//   gru:  z, r = sigmoid(x_z + hp_z), sigmoid(x_r + hp_r); n = tanh(x_n + r hp_n), x = xp + bx;
//         h = z h_prev + (1 - z) n, with hp = h_prev U + bu            (gate order z, r, n)
//   lstm: i, f, g, o = sigmoid, sigmoid, tanh, sigmoid of (xp + bx + h U + bu);
//         c = f c_prev + i g; h = o tanh(c)                              (gate order i, f, g, o)
// Layouts are batch-major, as Keras passes them: xp (B, T, G*H), hs (B, T, H).
//
// TfrnnGatherRows / TfrnnScatterRows: one-hot inputs times W without the product: W's rows
// picked by id (ids outside the table pick zeros, as tf.one_hot encodes them), and its
// gradient, the rows summed back into a dense (V, W) table.
//
// TfrnnSoftmaxXent is TensorFlow's SparseSoftmaxCrossEntropyWithLogits (loss and its gradient
// per row) for the few classes of a character model, vectorised along the rows' classes.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"
#include "unsupported/Eigen/CXX11/Tensor"

// bfloat16 products where the compiler targets a CPU with AVX512_BF16 (Cooper Lake, Sapphire
// Rapids and later; AMD Zen 4 and later): pairs of bfloat16 multiplied and summed into float32
// (vdpbf16ps), twice the multiply-adds of a float32 FMA per instruction, and half the bytes of
// the packed kernel to stream each step. The states, the gates and every gradient stay float32.
#if defined(__AVX512F__) && defined(__AVX512BF16__)
#include <immintrin.h>
#define TFRNN_BF16 1
#endif

namespace {

using tensorflow::DEVICE_CPU;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::int64;
namespace errors = tensorflow::errors;
using tensorflow::shape_inference::InferenceContext;

using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Strided = Eigen::Map<Mat, 0, Eigen::OuterStride<>>;
using CStrided = Eigen::Map<const Mat, 0, Eigen::OuterStride<>>;
using CMat = Eigen::Map<const Mat>;
using Row = Eigen::Map<const Eigen::Array<float, 1, Eigen::Dynamic>>;

enum Cell { kRnn, kGru, kLstm };

Cell ParseCell(const std::string& s) { return s == "gru" ? kGru : (s == "lstm" ? kLstm : kRnn); }
int Gates(Cell c) { return c == kGru ? 3 : (c == kLstm ? 4 : 1); }
// Saved per step for the gradient: gru z, r, n, hp_n; lstm i, f, g, o, c, tanh(c); rnn nothing.
int Saved(Cell c) { return c == kGru ? 4 : (c == kLstm ? 6 : 0); }

// sigmoid(x) = (1 + tanh(x / 2)) / 2: Eigen's vectorised tanh is 3x faster than its logistic.
template <typename X>
auto Sigmoid(const X& x) {
  return 0.5f * (0.5f * x).tanh() + 0.5f;
}

// The packed product. VecF is one vector register of floats (the widest the target has); a
// micro-kernel keeps kMR rows x kNR columns of the result in registers (16 of AVX-512's 32,
// 12 of AVX2's 16) while it runs down the shared dimension, one panel row per step.
#if defined(__AVX512F__)
#define TFRNN_VECTOR_BYTES 64
constexpr int kMR = 8;
#elif defined(__AVX__)
#define TFRNN_VECTOR_BYTES 32
constexpr int kMR = 6;
#else
#define TFRNN_VECTOR_BYTES 16
constexpr int kMR = 4;
#endif
typedef float VecF __attribute__((vector_size(TFRNN_VECTOR_BYTES)));
constexpr int kVec = TFRNN_VECTOR_BYTES / 4;
constexpr int kNR = 2 * kVec;

// Floats a (K, N) matrix takes packed: N in panels of kNR columns, the last one zero-padded.
inline int64 PackedSize(int64 K, int64 N) { return (N + kNR - 1) / kNR * kNR * K; }

// Pack the (K, N) matrix whose element (k, j) is b[k * rs + j * cs]: panel after panel, each
// K rows of kNR contiguous floats.
void Pack(const float* b, int64 rs, int64 cs, int64 K, int64 N, float* out) {
  for (int64 j0 = 0; j0 < N; j0 += kNR) {
    const int64 w = std::min<int64>(kNR, N - j0);
    for (int64 k = 0; k < K; ++k, out += kNR) {
      for (int64 j = 0; j < w; ++j) out[j] = b[k * rs + (j0 + j) * cs];
      std::fill(out + w, out + kNR, 0.f);
    }
  }
}

// c (M rows, stride ldc; the first w <= kNR columns) += a (M rows of K, stride lda) x panel.
template <int M>
void Micro(const float* a, int64 lda, const float* panel, int64 K, float* c, int64 ldc, int64 w) {
  VecF lo[M], hi[M];
  for (int r = 0; r < M; ++r) lo[r] = hi[r] = VecF{};
  for (int64 k = 0; k < K; ++k) {
    VecF b0, b1;
    std::memcpy(&b0, panel + k * kNR, sizeof b0);
    std::memcpy(&b1, panel + k * kNR + kVec, sizeof b1);
#pragma GCC unroll 8
    for (int r = 0; r < M; ++r) {
      const float x = a[r * lda + k];
      lo[r] += x * b0;
      hi[r] += x * b1;
    }
  }
  for (int r = 0; r < M; ++r) {
    float* row = c + r * ldc;
    if (w == kNR) {
      VecF c0, c1;
      std::memcpy(&c0, row, sizeof c0);
      std::memcpy(&c1, row + kVec, sizeof c1);
      c0 += lo[r];
      c1 += hi[r];
      std::memcpy(row, &c0, sizeof c0);
      std::memcpy(row + kVec, &c1, sizeof c1);
    } else {
      for (int64 j = 0; j < w; ++j) row[j] += j < kVec ? lo[r][j] : hi[r][j - kVec];
    }
  }
}

// c (M x N, stride ldc) += a (M x K, stride lda) x B, B packed by Pack. A panel at a time, so
// that it stays in cache while every block of rows uses it.
void PackedAdd(const float* a, int64 lda, int64 M, int64 K, const float* packed, int64 N, float* c,
               int64 ldc) {
  using Kernel = void (*)(const float*, int64, const float*, int64, float*, int64, int64);
  static constexpr Kernel kTail[] = {nullptr, Micro<1>, Micro<2>, Micro<3>, Micro<4>,
                                     Micro<5>, Micro<6>, Micro<7>};
  static_assert(kMR <= 8, "kTail covers remainders below 8 rows");
  for (int64 j0 = 0; j0 < N; j0 += kNR) {
    const float* panel = packed + j0 * K;
    const int64 w = std::min<int64>(kNR, N - j0);
    int64 r = 0;
    for (; r + kMR <= M; r += kMR) Micro<kMR>(a + r * lda, lda, panel, K, c + r * ldc + j0, ldc, w);
    if (r < M) kTail[M - r](a + r * lda, lda, panel, K, c + r * ldc + j0, ldc, w);
  }
}

// Shards of many rows take Eigen's general product instead: it packs the kernel again on
// every call, but that cost, K x N, is small beside the product's M x K x N once M is large
// (hw4's batches of 1,024: 512 rows a core), where its own packing of the rows beats the
// micro-kernel's strided reads. Few rows (the book's 16-64 a core) are what packing once pays.
constexpr int64 kGemmRows = 128;

// Columns of B per block of Eigen's product: a block stays in a core's level-2 cache while
// every row of the shard uses it.
constexpr int64 kBlockBytes = 1 << 20;

inline int64 BlockCols(int64 rows) {
  return std::max<int64>(64, (kBlockBytes / (4 * std::max<int64>(rows, 1))) / 64 * 64);
}

// A scratch buffer of `floats` from TensorFlow's allocator (freed with the op's step).
float* Scratch(OpKernelContext* ctx, int64 floats, Tensor* holder) {
  if (!ctx->allocate_temp(tensorflow::DT_FLOAT, TensorShape({std::max<int64>(floats, 1)}), holder).ok()) {
    return nullptr;
  }
  return holder->flat<float>().data();
}

#ifdef TFRNN_BF16
// float -> bfloat16, rounding to nearest even (as vcvtneps2bf16 does); NaN stays NaN.
inline uint16_t Bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// c (M rows, stride ldc; the first w <= 32 columns) += a x panel: a's rows as K2 pairs of
// bfloat16 each (one 32-bit word per pair, stride lda2 words), the panel as K2 x 32 column
// pairs (64 bfloat16 per pair of rows: columns 0-15, then 16-31).
template <int M>
void MicroBf16(const uint32_t* a, int64 lda2, const uint16_t* panel, int64 K2, float* c, int64 ldc, int64 w) {
  __m512 lo[M], hi[M];
  for (int r = 0; r < M; ++r) lo[r] = hi[r] = _mm512_setzero_ps();
  for (int64 kp = 0; kp < K2; ++kp) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(panel + kp * 64);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(panel + kp * 64 + 32);
#pragma GCC unroll 8
    for (int r = 0; r < M; ++r) {
      const __m512bh x = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[r * lda2 + kp]));
      lo[r] = _mm512_dpbf16_ps(lo[r], x, b0);
      hi[r] = _mm512_dpbf16_ps(hi[r], x, b1);
    }
  }
  const __mmask16 m0 = w >= 16 ? 0xffff : static_cast<__mmask16>((1u << w) - 1);
  const __mmask16 m1 = w >= 32 ? 0xffff : (w > 16 ? static_cast<__mmask16>((1u << (w - 16)) - 1) : 0);
  for (int r = 0; r < M; ++r) {
    float* row = c + r * ldc;
    _mm512_mask_storeu_ps(row, m0, _mm512_add_ps(_mm512_maskz_loadu_ps(m0, row), lo[r]));
    _mm512_mask_storeu_ps(row + 16, m1, _mm512_add_ps(_mm512_maskz_loadu_ps(m1, row + 16), hi[r]));
  }
}
#endif

// The product of a step's rows by the recurrent kernel (U forward, U^T backward), which does
// not change inside a sequence: packed once per op, in float32 panels, or in bfloat16 pairs
// where the op is asked for them (built with TFRNN_BF16 only).
class Product {
 public:
  // B (K, N), its element (k, j) at b[k * rs + j * cs].
  tensorflow::Status Prepare(OpKernelContext* ctx, bool bf16, const float* b, int64 rs, int64 cs, int64 K,
                             int64 N) {
    K_ = K, N_ = N, bf16_ = bf16, b_ = b, transposed_ = rs == 1 && cs == K;
    if (!bf16) {
      packed_ = Scratch(ctx, PackedSize(K, N), &holder_);
      if (packed_ == nullptr) return errors::ResourceExhausted("no memory for the packed kernel");
      Pack(b, rs, cs, K, N, packed_);
      return tensorflow::OkStatus();
    }
#ifdef TFRNN_BF16
    const int64 K2 = (K + 1) / 2, panels = (N + 31) / 32;
    packed_ = Scratch(ctx, (panels * K2 * 64 + 1) / 2, &holder_);  // 64 bfloat16 per pair of rows
    if (packed_ == nullptr) return errors::ResourceExhausted("no memory for the packed kernel");
    uint16_t* out = reinterpret_cast<uint16_t*>(packed_);
    for (int64 j0 = 0; j0 < N; j0 += 32) {
      for (int64 kp = 0; kp < K2; ++kp) {
        for (int64 j = 0; j < 32; ++j, out += 2) {
          for (int64 e = 0; e < 2; ++e) {
            const int64 k = 2 * kp + e;
            out[e] = (j0 + j < N && k < K) ? Bf16(b[k * rs + (j0 + j) * cs]) : 0;
          }
        }
      }
    }
    return tensorflow::OkStatus();
#else
    return errors::InvalidArgument("this library was built without AVX512_BF16: no bfloat16 products");
#endif
  }

  // c (M x N, stride ldc) += a (M x K, stride lda) x B; `rows`: the caller's scratch.
  void Add(const float* a, int64 lda, int64 M, float* c, int64 ldc, std::vector<uint16_t>* rows) const {
    if (!bf16_ && M >= kGemmRows) {
      GemmAdd(a, lda, M, c, ldc);
      return;
    }
    if (!bf16_) {
      PackedAdd(a, lda, M, K_, packed_, N_, c, ldc);
      return;
    }
#ifdef TFRNN_BF16
    const int64 K2 = (K_ + 1) / 2;
    rows->resize(M * K2 * 2);
    for (int64 r = 0; r < M; ++r) {  // a's rows in bfloat16, a zero after an odd K
      const float* src = a + r * lda;
      uint16_t* dst = rows->data() + r * K2 * 2;
      int64 k = 0;
      for (; k + 16 <= K_; k += 16) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + k)));
      }
      for (; k < K_; ++k) dst[k] = Bf16(src[k]);
      if (K_ % 2) dst[K_] = 0;
    }
    using Kernel = void (*)(const uint32_t*, int64, const uint16_t*, int64, float*, int64, int64);
    static constexpr Kernel kTail[] = {nullptr,       MicroBf16<1>, MicroBf16<2>, MicroBf16<3>,
                                       MicroBf16<4>, MicroBf16<5>, MicroBf16<6>, MicroBf16<7>};
    const uint32_t* pairs = reinterpret_cast<const uint32_t*>(rows->data());
    const uint16_t* packed = reinterpret_cast<const uint16_t*>(packed_);
    for (int64 j0 = 0; j0 < N_; j0 += 32) {
      const uint16_t* panel = packed + j0 / 32 * K2 * 64;
      const int64 w = std::min<int64>(32, N_ - j0);
      int64 r = 0;
      for (; r + 8 <= M; r += 8) MicroBf16<8>(pairs + r * K2, K2, panel, K2, c + r * ldc + j0, ldc, w);
      if (r < M) kTail[M - r](pairs + r * K2, K2, panel, K2, c + r * ldc + j0, ldc, w);
    }
#endif
  }

 private:
  // c += a x B with Eigen's product, B's columns a block at a time (B = b_ (K, N) row-major,
  // or the transpose of b_ (N, K) row-major).
  void GemmAdd(const float* a, int64 lda, int64 M, float* c, int64 ldc) const {
    const CStrided A(a, M, K_, Eigen::OuterStride<>(lda));
    Strided C(c, M, N_, Eigen::OuterStride<>(ldc));
    const int64 step = BlockCols(K_);
    for (int64 j = 0; j < N_; j += step) {
      const int64 cols = std::min(step, N_ - j);
      if (transposed_) {
        C.middleCols(j, cols).noalias() += A * CMat(b_, N_, K_).middleRows(j, cols).transpose();
      } else {
        C.middleCols(j, cols).noalias() += A * CMat(b_, K_, N_).middleCols(j, cols);
      }
    }
  }

  Tensor holder_;
  float* packed_ = nullptr;
  const float* b_ = nullptr;
  int64 K_ = 0, N_ = 0;
  bool bf16_ = false, transposed_ = false;
};

// Rows [b0, b1) of a (B, T, W) tensor at step t: a strided (b1 - b0, cols) block from column c0.
inline Strided At(float* base, int64 b0, int64 b1, int64 t, int64 T, int64 W, int64 c0, int64 cols) {
  return Strided(base + (b0 * T + t) * W + c0, b1 - b0, cols, Eigen::OuterStride<>(T * W));
}
inline CStrided CAt(const float* base, int64 b0, int64 b1, int64 t, int64 T, int64 W, int64 c0,
                    int64 cols) {
  return CStrided(base + (b0 * T + t) * W + c0, b1 - b0, cols, Eigen::OuterStride<>(T * W));
}

void Shard(OpKernelContext* ctx, int64 batch, int64 cost_per_row,
           const std::function<void(int64, int64)>& work) {
  auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
  tensorflow::Shard(threads->num_threads, threads->workers, batch, cost_per_row, work);
}

// An op of one cell kind (its "cell" attribute).
class CellOp : public OpKernel {
 public:
  explicit CellOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::string cell;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("cell", &cell));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("bf16", &bf16_));
    cell_ = ParseCell(cell);
  }

 protected:
  Cell cell_;
  bool bf16_;  // the recurrent products in bfloat16 (TFRNN_BF16 builds only)
};

class ForwardOp : public CellOp {
 public:
  explicit ForwardOp(OpKernelConstruction* ctx) : CellOp(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("save", &save_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& xp = ctx->input(0);
    const Tensor& h0 = ctx->input(1);
    const Tensor& c0 = ctx->input(2);
    const Tensor& u = ctx->input(3);
    const Tensor& bx = ctx->input(4);
    const Tensor& bu = ctx->input(5);
    OP_REQUIRES(ctx, xp.dims() == 3, errors::InvalidArgument("xp must be (batch, time, gates*units)"));
    const int64 B = xp.dim_size(0), T = xp.dim_size(1), G = Gates(cell_);
    const int64 H = u.dim_size(0), GH = G * H, S = Saved(cell_) * H;
    OP_REQUIRES(ctx, u.dims() == 2 && u.dim_size(1) == GH && xp.dim_size(2) == GH,
                errors::InvalidArgument("recurrent kernel and projection widths disagree"));
    OP_REQUIRES(ctx, h0.dim_size(0) == B && h0.dim_size(1) == H && c0.dim_size(0) == B &&
                         c0.dim_size(1) == H && bu.NumElements() == GH && bx.NumElements() == GH,
                errors::InvalidArgument("state or bias shapes disagree"));
    Tensor *hs_t, *c_t, *ws_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({B, T, H}), &hs_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({B, H}), &c_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({B, T, save_ ? S : 0}), &ws_t));
    const bool save = save_;
    const float* x = xp.flat<float>().data();
    float* hs = hs_t->flat<float>().data();
    float* ws = ws_t->flat<float>().data();
    float* c_last = c_t->flat<float>().data();
    Product product;  // h_prev U, U packed once for every step
    OP_REQUIRES_OK(ctx, product.Prepare(ctx, bf16_, u.flat<float>().data(), GH, 1, H, GH));
    const Row b(bu.flat<float>().data(), GH);
    const Row bxr(bx.flat<float>().data(), GH);
    const Eigen::Array<float, 1, Eigen::Dynamic> bsum = bxr + b;
    const float* h0p = h0.flat<float>().data();
    const float* c0p = c0.flat<float>().data();
    const Cell cell = cell_;

    auto work = [&](int64 b0, int64 b1) {
      const int64 n = b1 - b0;
      Mat z(n, GH);  // GRU: h_prev U + bu; else the whole pre-activation
      Mat xb(cell == kGru ? n : 0, GH);  // xp_t + bx (GRU)
      Mat local(save ? 0 : n, S);  // this step's gates when they are not saved
      Mat c(n, H);  // LSTM's cell state
      std::vector<uint16_t> rows;  // h_prev in bfloat16, for bfloat16 products
      if (cell == kLstm) c = CMat(c0p + b0 * H, n, H);
      for (int64 t = 0; t < T; ++t) {
        auto w = [&](int k) {
          return save ? At(ws, b0, b1, t, T, S, k * H, H).array()
                      : Strided(local.data() + k * H, n, H, Eigen::OuterStride<>(S)).array();
        };
        CStrided hprev = t == 0 ? CStrided(h0p + b0 * H, n, H, Eigen::OuterStride<>(H))
                                : CAt(hs, b0, b1, t - 1, T, H, 0, H);
        Strided h = At(hs, b0, b1, t, T, H, 0, H);
        auto za = [&](int k) { return z.middleCols(k * H, H).array(); };
        if (cell == kGru) {  // h_prev U + bu apart: its n block is gated by r
          z.array().rowwise() = b;
          product.Add(hprev.data(), hprev.outerStride(), n, z.data(), GH, &rows);
          xb = CAt(x, b0, b1, t, T, GH, 0, GH);
          xb.array().rowwise() += bxr;
          auto xa = [&](int k) { return xb.middleCols(k * H, H).array(); };
          w(0) = Sigmoid(xa(0) + za(0));
          w(1) = Sigmoid(xa(1) + za(1));
          w(3) = za(2);
          w(2) = (xa(2) + w(1) * za(2)).tanh();
          h.array() = w(0) * hprev.array() + (1.f - w(0)) * w(2);
          continue;
        }
        // SimpleRNN, LSTM: z = xp_t + bx + bu + h_prev U, the product added in place
        z = CAt(x, b0, b1, t, T, GH, 0, GH);
        z.array().rowwise() += bsum;
        product.Add(hprev.data(), hprev.outerStride(), n, z.data(), GH, &rows);
        if (cell == kRnn) {
          h.array() = za(0).tanh();
        } else {
          w(0) = Sigmoid(za(0));
          w(1) = Sigmoid(za(1));
          w(2) = za(2).tanh();
          w(3) = Sigmoid(za(3));
          c.array() = w(1) * c.array() + w(0) * w(2);
          w(4) = c.array();
          w(5) = c.array().tanh();
          h.array() = w(3) * w(5);
        }
      }
      Eigen::Map<Mat> last(c_last + b0 * H, n, H);
      if (cell == kLstm) {
        last = c;
      } else if (T > 0) {
        last = CAt(hs, b0, b1, T - 1, T, H, 0, H);
      } else {
        last = CMat(c0p + b0 * H, n, H);
      }
    };
    if (T > 0) {
      Shard(ctx, B, T * H * GH * 4, work);
    } else {
      std::copy(c0p, c0p + B * H, c_last);
    }
  }

 private:
  bool save_;
};

class BackwardOp : public CellOp {
 public:
  explicit BackwardOp(OpKernelConstruction* ctx) : CellOp(ctx) {}

  // The gradients of the inputs and initial states, and of the product h_prev U at every step
  // (dxp for SimpleRNN and LSTM; GRU's n block differs, r * dn: returned as dhp_n). The weight
  // gradients are products over all steps at once, outside (tfrnn.kernel).
  void Compute(OpKernelContext* ctx) override {
    const Tensor& dhs_t = ctx->input(0);
    const Tensor& dc_last_t = ctx->input(1);
    const Tensor& hs_t = ctx->input(2);
    const Tensor& ws_t = ctx->input(3);
    const Tensor& h0 = ctx->input(4);
    const Tensor& c0 = ctx->input(5);
    const Tensor& u = ctx->input(6);
    const int64 B = hs_t.dim_size(0), T = hs_t.dim_size(1), H = hs_t.dim_size(2);
    const int64 G = Gates(cell_), GH = G * H, S = Saved(cell_) * H;
    const int64 N = cell_ == kGru ? H : 0;  // width of dhp_n
    Tensor *dxp_t, *dh0_t, *dc0_t, *dhpn_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({B, T, GH}), &dxp_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({B, H}), &dh0_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({B, H}), &dc0_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, TensorShape({B, T, N}), &dhpn_t));
    const float* dhs = dhs_t.flat<float>().data();
    const float* hs = hs_t.flat<float>().data();
    const float* ws = ws_t.flat<float>().data();
    const float* h0p = h0.flat<float>().data();
    const float* c0p = c0.flat<float>().data();
    const float* dc_last = dc_last_t.flat<float>().data();
    float* dxp = dxp_t->flat<float>().data();
    float* dh0 = dh0_t->flat<float>().data();
    float* dc0 = dc0_t->flat<float>().data();
    float* dhpn = dhpn_t->flat<float>().data();
    Product product;  // lhs U^T, U^T packed once for every step
    OP_REQUIRES_OK(ctx, product.Prepare(ctx, bf16_, u.flat<float>().data(), 1, GH, GH, H));
    const Cell cell = cell_;

    auto work = [&](int64 b0, int64 b1) {
      const int64 n = b1 - b0;
      // c_last is the last c of an LSTM, the last h otherwise: its gradient starts dc or dh.
      const Mat d_last = CMat(dc_last + b0 * H, n, H);
      Mat dh_next = cell == kLstm ? Mat::Zero(n, H) : d_last;
      Mat dc_next = cell == kLstm ? d_last : Mat::Zero(n, H);
      Mat dh(n, H), dc(n, H), dhp(cell == kGru ? n : 0, GH);
      std::vector<uint16_t> rows;  // the product's left side in bfloat16, for bfloat16 products
      // dh_next += lhs x U^T, lhs (n, GH) with row stride ld
      auto add_times_ut = [&](const float* lhs, int64 ld) { product.Add(lhs, ld, n, dh_next.data(), H, &rows); };
      for (int64 t = T - 1; t >= 0; --t) {
        CStrided hprev = t == 0 ? CStrided(h0p + b0 * H, n, H, Eigen::OuterStride<>(H))
                                : CAt(hs, b0, b1, t - 1, T, H, 0, H);
        dh = CAt(dhs, b0, b1, t, T, H, 0, H) + dh_next;
        auto dx = [&](int k) { return At(dxp, b0, b1, t, T, GH, k * H, H).array(); };
        auto w = [&](int k) { return CAt(ws, b0, b1, t, T, S, k * H, H).array(); };
        if (cell == kRnn) {
          auto h = CAt(hs, b0, b1, t, T, H, 0, H).array();
          dx(0) = dh.array() * (1.f - h * h);
          dh_next.setZero();
          add_times_ut(dxp + (b0 * T + t) * GH, T * GH);
        } else if (cell == kGru) {
          // w: z, r, n, hp_n
          auto dn = (dh.array() * (1.f - w(0)) * (1.f - w(2) * w(2))).eval();
          dx(2) = dn;
          dx(1) = dn * w(3) * w(1) * (1.f - w(1));
          dx(0) = dh.array() * (hprev.array() - w(2)) * w(0) * (1.f - w(0));
          dhp.leftCols(2 * H) = At(dxp, b0, b1, t, T, GH, 0, 2 * H);
          dhp.rightCols(H).array() = dn * w(1);
          At(dhpn, b0, b1, t, T, H, 0, H) = dhp.rightCols(H);
          dh_next.array() = dh.array() * w(0);
          add_times_ut(dhp.data(), GH);
        } else {
          // w: i, f, g, o, c, tanh(c)
          CStrided cprev = t == 0 ? CStrided(c0p + b0 * H, n, H, Eigen::OuterStride<>(H))
                                  : CAt(ws, b0, b1, t - 1, T, S, 4 * H, H);
          dc.array() = dh.array() * w(3) * (1.f - w(5) * w(5)) + dc_next.array();
          dx(0) = dc.array() * w(2) * w(0) * (1.f - w(0));
          dx(1) = dc.array() * cprev.array() * w(1) * (1.f - w(1));
          dx(2) = dc.array() * w(0) * (1.f - w(2) * w(2));
          dx(3) = dh.array() * w(5) * w(3) * (1.f - w(3));
          dc_next.array() = dc.array() * w(1);
          dh_next.setZero();
          add_times_ut(dxp + (b0 * T + t) * GH, T * GH);
        }
      }
      Eigen::Map<Mat>(dh0 + b0 * H, n, H) = dh_next;
      Eigen::Map<Mat>(dc0 + b0 * H, n, H) = dc_next;
    };
    Shard(ctx, B, T * H * GH * 4, work);
  }
};

template <typename Label>
class SoftmaxXentOp : public OpKernel {
 public:
  explicit SoftmaxXentOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& logits_t = ctx->input(0);
    const Tensor& labels_t = ctx->input(1);
    OP_REQUIRES(ctx, logits_t.dims() >= 1 && labels_t.dims() == logits_t.dims() - 1,
                errors::InvalidArgument("labels must have the logits' shape without its last axis"));
    for (int d = 0; d < labels_t.dims(); ++d) {
      OP_REQUIRES(ctx, labels_t.dim_size(d) == logits_t.dim_size(d),
                  errors::InvalidArgument("labels and logits disagree in axis ", d));
    }
    const int64 V = logits_t.dim_size(logits_t.dims() - 1), N = labels_t.NumElements();
    const Label* labels = labels_t.flat<Label>().data();
    for (int64 i = 0; i < N; ++i) {
      OP_REQUIRES(ctx, labels[i] >= 0 && labels[i] < V,
                  errors::InvalidArgument("label ", labels[i], " is not in [0, ", V, ")"));
    }
    Tensor *loss_t, *grad_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, labels_t.shape(), &loss_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, logits_t.shape(), &grad_t));
    if (N == 0 || V == 0) return;
    const float* logits = logits_t.flat<float>().data();
    float* loss = loss_t->flat<float>().data();
    float* grad = grad_t->flat<float>().data();
    auto work = [&](int64 r0, int64 r1) {
      constexpr int64 kBlock = 256;  // rows at a time, in L1
      float shift[kBlock];
      for (int64 b0 = r0; b0 < r1; b0 += kBlock) {
        const int64 n = std::min(kBlock, r1 - b0);
        const float* l = logits + b0 * V;
        float* g = grad + b0 * V;
        for (int64 i = 0; i < n; ++i) {  // logits less each row's largest
          const float* li = l + i * V;
          float m = li[0];
          for (int64 j = 1; j < V; ++j) m = std::max(m, li[j]);
          shift[i] = m;
          for (int64 j = 0; j < V; ++j) g[i * V + j] = li[j] - m;
        }
        // one vectorised exp over the block's rows together (a row of 28 alone would not)
        Eigen::Map<Eigen::ArrayXf> flat(g, n * V);
        flat = flat.exp();
        for (int64 i = 0; i < n; ++i) {
          float* gi = g + i * V;
          float sum = 0.f;
          for (int64 j = 0; j < V; ++j) sum += gi[j];
          const float inv = 1.f / sum;
          for (int64 j = 0; j < V; ++j) gi[j] *= inv;
          const int64 y = labels[b0 + i];
          loss[b0 + i] = std::log(sum) - (l[i * V + y] - shift[i]);
          gi[y] -= 1.f;
        }
      }
    };
    Shard(ctx, N, V * 20, work);
  }
};

template <typename Index>
class GatherRowsOp : public OpKernel {
 public:
  explicit GatherRowsOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& table_t = ctx->input(0);
    const Tensor& ids_t = ctx->input(1);
    OP_REQUIRES(ctx, table_t.dims() == 2, errors::InvalidArgument("the table must be (rows, width)"));
    const int64 V = table_t.dim_size(0), W = table_t.dim_size(1), N = ids_t.NumElements();
    TensorShape shape = ids_t.shape();
    shape.AddDim(W);
    Tensor* out_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, shape, &out_t));
    const float* table = table_t.flat<float>().data();
    const Index* ids = ids_t.flat<Index>().data();
    float* out = out_t->flat<float>().data();
    Shard(ctx, N, W * 2, [&](int64 r0, int64 r1) {
      for (int64 r = r0; r < r1; ++r) {
        const int64 id = ids[r];
        if (id >= 0 && id < V) {
          std::copy(table + id * W, table + (id + 1) * W, out + r * W);
        } else {
          std::fill(out + r * W, out + (r + 1) * W, 0.f);
        }
      }
    });
  }
};

template <typename Index>
class ScatterRowsOp : public OpKernel {
 public:
  explicit ScatterRowsOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& grad_t = ctx->input(0);
    const Tensor& ids_t = ctx->input(1);
    const Tensor& table_t = ctx->input(2);
    const int64 V = table_t.dim_size(0), W = table_t.dim_size(1), N = ids_t.NumElements();
    OP_REQUIRES(ctx, grad_t.NumElements() == N * W,
                errors::InvalidArgument("the gradient must have the ids' shape plus the width"));
    Tensor* out_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, table_t.shape(), &out_t));
    const float* grad = grad_t.flat<float>().data();
    const Index* ids = ids_t.flat<Index>().data();
    Eigen::Map<Mat> out(out_t->flat<float>().data(), V, W);
    out.setZero();
    std::mutex mu;
    std::map<int64, Mat> parts;  // summed in row order: the same result every time
    Shard(ctx, N, W * 2, [&](int64 r0, int64 r1) {
      Mat part = Mat::Zero(V, W);
      for (int64 r = r0; r < r1; ++r) {
        const int64 id = ids[r];
        if (id >= 0 && id < V) part.row(id) += CMat(grad + r * W, 1, W);
      }
      std::lock_guard<std::mutex> lock(mu);
      parts.emplace(r0, std::move(part));
    });
    for (const auto& part : parts) out += part.second;
  }
};

}  // namespace

REGISTER_OP("TfrnnGatherRows")
    .Attr("Tindices: {int32, int64}")
    .Input("table: float")
    .Input("ids: Tindices")
    .Output("rows: float")
    .SetShapeFn([](InferenceContext* c) {
      tensorflow::shape_inference::ShapeHandle out;
      TF_RETURN_IF_ERROR(c->Concatenate(c->input(1), c->Vector(c->Dim(c->input(0), 1)), &out));
      c->set_output(0, out);
      return absl::OkStatus();
    });

REGISTER_OP("TfrnnScatterRows")
    .Attr("Tindices: {int32, int64}")
    .Input("grad: float")
    .Input("ids: Tindices")
    .Input("table: float")
    .Output("d_table: float")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(2));
      return absl::OkStatus();
    });

#define TFRNN_ROWS_KERNELS(Index)                                                                  \
  REGISTER_KERNEL_BUILDER(                                                                         \
      Name("TfrnnGatherRows").Device(DEVICE_CPU).TypeConstraint<tensorflow::Index>("Tindices"),    \
      GatherRowsOp<tensorflow::Index>);                                                            \
  REGISTER_KERNEL_BUILDER(                                                                         \
      Name("TfrnnScatterRows").Device(DEVICE_CPU).TypeConstraint<tensorflow::Index>("Tindices"),   \
      ScatterRowsOp<tensorflow::Index>);
TFRNN_ROWS_KERNELS(int32)
TFRNN_ROWS_KERNELS(int64)

REGISTER_OP("TfrnnSoftmaxXent")
    .Attr("Tlabels: {int32, int64}")
    .Input("logits: float")
    .Input("labels: Tlabels")
    .Output("loss: float")
    .Output("backprop: float")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(1));
      c->set_output(1, c->input(0));
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(
    Name("TfrnnSoftmaxXent").Device(DEVICE_CPU).TypeConstraint<tensorflow::int32>("Tlabels"),
    SoftmaxXentOp<tensorflow::int32>);
REGISTER_KERNEL_BUILDER(
    Name("TfrnnSoftmaxXent").Device(DEVICE_CPU).TypeConstraint<tensorflow::int64>("Tlabels"),
    SoftmaxXentOp<tensorflow::int64>);

// save: keep what the gradient needs in `saved` (training); else `saved` is empty.
REGISTER_OP("TfrnnRecurrence")
    .Attr("cell: {'rnn', 'gru', 'lstm'}")
    .Attr("save: bool = true")
    .Attr("bf16: bool = false")
    .Input("xp: float")
    .Input("h0: float")
    .Input("c0: float")
    .Input("recurrent_kernel: float")
    .Input("input_bias: float")
    .Input("recurrent_bias: float")
    .Output("hs: float")
    .Output("c_last: float")
    .Output("saved: float")
    .SetShapeFn([](InferenceContext* c) {
      std::string cell;
      bool save;
      TF_RETURN_IF_ERROR(c->GetAttr("cell", &cell));
      TF_RETURN_IF_ERROR(c->GetAttr("save", &save));
      auto xp = c->input(0);
      auto units = c->Dim(c->input(3), 0);
      auto batch = c->Dim(xp, 0);
      auto time = c->Dim(xp, 1);
      tensorflow::shape_inference::DimensionHandle saved;
      TF_RETURN_IF_ERROR(c->Multiply(units, save ? Saved(ParseCell(cell)) : 0, &saved));
      c->set_output(0, c->MakeShape({batch, time, units}));
      c->set_output(1, c->MakeShape({batch, units}));
      c->set_output(2, c->MakeShape({batch, time, saved}));
      return absl::OkStatus();
    });

REGISTER_OP("TfrnnRecurrenceGrad")
    .Attr("cell: {'rnn', 'gru', 'lstm'}")
    .Attr("bf16: bool = false")
    .Input("dhs: float")
    .Input("dc_last: float")
    .Input("hs: float")
    .Input("saved: float")
    .Input("h0: float")
    .Input("c0: float")
    .Input("recurrent_kernel: float")
    .Output("dxp: float")
    .Output("dh0: float")
    .Output("dc0: float")
    .Output("dhp_n: float")
    .SetShapeFn([](InferenceContext* c) {
      std::string cell;
      TF_RETURN_IF_ERROR(c->GetAttr("cell", &cell));
      auto hs = c->input(2);
      auto u = c->input(6);
      c->set_output(0, c->MakeShape({c->Dim(hs, 0), c->Dim(hs, 1), c->Dim(u, 1)}));
      c->set_output(1, c->input(4));
      c->set_output(2, c->input(5));
      c->set_output(3, c->MakeShape({c->Dim(hs, 0), c->Dim(hs, 1), cell == "gru" ? c->Dim(hs, 2) : c->MakeDim(0)}));
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("TfrnnRecurrence").Device(DEVICE_CPU), ForwardOp);
REGISTER_KERNEL_BUILDER(Name("TfrnnRecurrenceGrad").Device(DEVICE_CPU), BackwardOp);

// What this build can do beyond float32: "avx512_bf16" where it has bfloat16 products, else "".
class FeaturesOp : public OpKernel {
 public:
  explicit FeaturesOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    Tensor* out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &out));
#ifdef TFRNN_BF16
    out->scalar<tensorflow::tstring>()() = "avx512_bf16";
#else
    out->scalar<tensorflow::tstring>()() = "";
#endif
  }
};

REGISTER_OP("TfrnnFeatures").Output("features: string").SetShapeFn(tensorflow::shape_inference::ScalarShape);
REGISTER_KERNEL_BUILDER(Name("TfrnnFeatures").Device(DEVICE_CPU), FeaturesOp);
