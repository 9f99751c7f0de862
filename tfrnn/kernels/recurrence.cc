// tfrnn's fused recurrence for CPUs: a whole sequence of SimpleRNN, GRU (reset_after) or LSTM
// steps in one TensorFlow op, and its gradient (backpropagation through time) in another.
//
// The input projection x W + b is computed outside (one large product over all steps); these
// ops run only the recurrence, batch rows split across TensorFlow's CPU threads. Compiled on
// the user's machine for its own vector units (tfrnn/kernel.py), so AVX-512 CPUs get AVX-512
// code where TensorFlow's wheel stops at AVX2. Gate orders and formulas are Keras':
//   rnn:  h = tanh(xp + h U + bu)
//   gru:  z, r = sigmoid(xp_z + hp_z), sigmoid(xp_r + hp_r); n = tanh(xp_n + r hp_n);
//         h = z h_prev + (1 - z) n, with hp = h_prev U + bu            (gate order z, r, n)
//   lstm: i, f, g, o = sigmoid, sigmoid, tanh, sigmoid of (xp + h U + bu);
//         c = f c_prev + i g; h = o tanh(c)                              (gate order i, f, g, o)
// Layouts are batch-major, as Keras passes them: xp (B, T, G*H), hs (B, T, H).

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"
#include "unsupported/Eigen/CXX11/Tensor"

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

template <typename X>
auto Sigmoid(const X& x) {
  return x.logistic();
}

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

class ForwardOp : public OpKernel {
 public:
  explicit ForwardOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::string cell;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("cell", &cell));
    cell_ = ParseCell(cell);
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& xp = ctx->input(0);
    const Tensor& h0 = ctx->input(1);
    const Tensor& c0 = ctx->input(2);
    const Tensor& u = ctx->input(3);
    const Tensor& bu = ctx->input(4);
    OP_REQUIRES(ctx, xp.dims() == 3, errors::InvalidArgument("xp must be (batch, time, gates*units)"));
    const int64 B = xp.dim_size(0), T = xp.dim_size(1), G = Gates(cell_);
    const int64 H = u.dim_size(0), GH = G * H, S = Saved(cell_) * H;
    OP_REQUIRES(ctx, u.dims() == 2 && u.dim_size(1) == GH && xp.dim_size(2) == GH,
                errors::InvalidArgument("recurrent kernel and projection widths disagree"));
    OP_REQUIRES(ctx, h0.dim_size(0) == B && h0.dim_size(1) == H && c0.dim_size(0) == B &&
                         c0.dim_size(1) == H && bu.NumElements() == GH,
                errors::InvalidArgument("state or bias shapes disagree"));
    Tensor *hs_t, *c_t, *ws_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({B, T, H}), &hs_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({B, H}), &c_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({B, T, S}), &ws_t));
    const float* x = xp.flat<float>().data();
    float* hs = hs_t->flat<float>().data();
    float* ws = ws_t->flat<float>().data();
    float* c_last = c_t->flat<float>().data();
    const CMat U(u.flat<float>().data(), H, GH);
    const Row b(bu.flat<float>().data(), GH);
    const float* h0p = h0.flat<float>().data();
    const float* c0p = c0.flat<float>().data();
    const Cell cell = cell_;

    auto work = [&](int64 b0, int64 b1) {
      const int64 n = b1 - b0;
      Mat z(n, GH);  // x_t + h_prev U + bu (pre-activations)
      for (int64 t = 0; t < T; ++t) {
        CStrided hprev = t == 0 ? CStrided(h0p + b0 * H, n, H, Eigen::OuterStride<>(H))
                                : CAt(hs, b0, b1, t - 1, T, H, 0, H);
        z.noalias() = hprev * U;
        z.array().rowwise() += b;
        Strided h = At(hs, b0, b1, t, T, H, 0, H);
        auto xa = [&](int k) { return CAt(x, b0, b1, t, T, GH, k * H, H).array(); };
        auto za = [&](int k) { return z.middleCols(k * H, H).array(); };
        if (cell == kRnn) {
          h.array() = (xa(0) + za(0)).tanh();
        } else if (cell == kGru) {
          auto w = [&](int k) { return At(ws, b0, b1, t, T, S, k * H, H).array(); };
          w(0) = Sigmoid(xa(0) + za(0));
          w(1) = Sigmoid(xa(1) + za(1));
          w(3) = za(2);
          w(2) = (xa(2) + w(1) * za(2)).tanh();
          h.array() = w(0) * hprev.array() + (1.f - w(0)) * w(2);
        } else {
          auto w = [&](int k) { return At(ws, b0, b1, t, T, S, k * H, H).array(); };
          CStrided cprev = t == 0 ? CStrided(c0p + b0 * H, n, H, Eigen::OuterStride<>(H))
                                  : CAt(ws, b0, b1, t - 1, T, S, 4 * H, H);
          w(0) = Sigmoid(xa(0) + za(0));
          w(1) = Sigmoid(xa(1) + za(1));
          w(2) = (xa(2) + za(2)).tanh();
          w(3) = Sigmoid(xa(3) + za(3));
          w(4) = w(1) * cprev.array() + w(0) * w(2);
          w(5) = w(4).tanh();
          h.array() = w(3) * w(5);
        }
      }
      Eigen::Map<Mat> last(c_last + b0 * H, n, H);
      if (cell == kLstm) {
        last = CAt(ws, b0, b1, T - 1, T, S, 4 * H, H);
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
  Cell cell_;
};

class BackwardOp : public OpKernel {
 public:
  explicit BackwardOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::string cell;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("cell", &cell));
    cell_ = ParseCell(cell);
  }

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
    Tensor *dxp_t, *dh0_t, *dc0_t, *du_t, *dbu_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({B, T, GH}), &dxp_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({B, H}), &dh0_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({B, H}), &dc0_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, TensorShape({H, GH}), &du_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, TensorShape({GH}), &dbu_t));
    const float* dhs = dhs_t.flat<float>().data();
    const float* hs = hs_t.flat<float>().data();
    const float* ws = ws_t.flat<float>().data();
    const float* h0p = h0.flat<float>().data();
    const float* c0p = c0.flat<float>().data();
    const float* dc_last = dc_last_t.flat<float>().data();
    float* dxp = dxp_t->flat<float>().data();
    float* dh0 = dh0_t->flat<float>().data();
    float* dc0 = dc0_t->flat<float>().data();
    Eigen::Map<Mat> dU(du_t->flat<float>().data(), H, GH);
    Eigen::Map<Eigen::Array<float, 1, Eigen::Dynamic>> dbu(dbu_t->flat<float>().data(), GH);
    dU.setZero();
    dbu.setZero();
    const CMat U(u.flat<float>().data(), H, GH);
    const Cell cell = cell_;
    std::mutex mu;
    std::map<int64, std::pair<Mat, Eigen::Array<float, 1, Eigen::Dynamic>>> parts;  // by first row

    auto work = [&](int64 b0, int64 b1) {
      const int64 n = b1 - b0;
      // c_last is the last c of an LSTM, the last h otherwise: its gradient starts dc or dh.
      const Mat d_last = CMat(dc_last + b0 * H, n, H);
      Mat dh_next = cell == kLstm ? Mat::Zero(n, H) : d_last;
      Mat dc_next = cell == kLstm ? d_last : Mat::Zero(n, H);
      Mat dh(n, H), dc(n, H);
      Mat dhp(n, GH), dU_part = Mat::Zero(H, GH);
      Eigen::Array<float, 1, Eigen::Dynamic> dbu_part = Eigen::Array<float, 1, Eigen::Dynamic>::Zero(GH);
      for (int64 t = T - 1; t >= 0; --t) {
        CStrided hprev = t == 0 ? CStrided(h0p + b0 * H, n, H, Eigen::OuterStride<>(H))
                                : CAt(hs, b0, b1, t - 1, T, H, 0, H);
        dh = CAt(dhs, b0, b1, t, T, H, 0, H) + dh_next;
        auto dx = [&](int k) { return At(dxp, b0, b1, t, T, GH, k * H, H).array(); };
        auto w = [&](int k) { return CAt(ws, b0, b1, t, T, S, k * H, H).array(); };
        if (cell == kRnn) {
          auto h = CAt(hs, b0, b1, t, T, H, 0, H).array();
          dx(0) = dh.array() * (1.f - h * h);
          dhp = At(dxp, b0, b1, t, T, GH, 0, GH);
          dh_next.noalias() = dhp * U.transpose();
        } else if (cell == kGru) {
          // w: z, r, n, hp_n
          auto dn = (dh.array() * (1.f - w(0)) * (1.f - w(2) * w(2))).eval();
          dx(2) = dn;
          dx(1) = dn * w(3) * w(1) * (1.f - w(1));
          dx(0) = dh.array() * (hprev.array() - w(2)) * w(0) * (1.f - w(0));
          dhp.leftCols(2 * H) = At(dxp, b0, b1, t, T, GH, 0, 2 * H);
          dhp.rightCols(H).array() = dn * w(1);
          dh_next.array() = dh.array() * w(0);
          dh_next.noalias() += dhp * U.transpose();
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
          dhp = At(dxp, b0, b1, t, T, GH, 0, GH);
          dh_next.noalias() = dhp * U.transpose();
        }
        dU_part.noalias() += hprev.transpose() * dhp;
        dbu_part += dhp.array().colwise().sum();
      }
      Eigen::Map<Mat>(dh0 + b0 * H, n, H) = dh_next;
      Eigen::Map<Mat>(dc0 + b0 * H, n, H) = dc_next;
      std::lock_guard<std::mutex> lock(mu);
      parts.emplace(b0, std::make_pair(std::move(dU_part), std::move(dbu_part)));
    };
    Shard(ctx, B, T * H * GH * 8, work);
    // Summed in the order of their rows, not of the threads finishing: the same gradient
    // every time (a resumed run repeats an uninterrupted one bit for bit).
    for (const auto& part : parts) {
      dU += part.second.first;
      dbu += part.second.second;
    }
  }

 private:
  Cell cell_;
};

}  // namespace

REGISTER_OP("TfrnnRecurrence")
    .Attr("cell: {'rnn', 'gru', 'lstm'}")
    .Input("xp: float")
    .Input("h0: float")
    .Input("c0: float")
    .Input("recurrent_kernel: float")
    .Input("recurrent_bias: float")
    .Output("hs: float")
    .Output("c_last: float")
    .Output("saved: float")
    .SetShapeFn([](InferenceContext* c) {
      std::string cell;
      TF_RETURN_IF_ERROR(c->GetAttr("cell", &cell));
      auto xp = c->input(0);
      auto units = c->Dim(c->input(3), 0);
      auto batch = c->Dim(xp, 0);
      auto time = c->Dim(xp, 1);
      tensorflow::shape_inference::DimensionHandle saved;
      TF_RETURN_IF_ERROR(c->Multiply(units, Saved(ParseCell(cell)), &saved));
      c->set_output(0, c->MakeShape({batch, time, units}));
      c->set_output(1, c->MakeShape({batch, units}));
      c->set_output(2, c->MakeShape({batch, time, saved}));
      return absl::OkStatus();
    });

REGISTER_OP("TfrnnRecurrenceGrad")
    .Attr("cell: {'rnn', 'gru', 'lstm'}")
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
    .Output("d_recurrent_kernel: float")
    .Output("d_recurrent_bias: float")
    .SetShapeFn([](InferenceContext* c) {
      auto hs = c->input(2);
      auto u = c->input(6);
      c->set_output(0, c->MakeShape({c->Dim(hs, 0), c->Dim(hs, 1), c->Dim(u, 1)}));
      c->set_output(1, c->input(4));
      c->set_output(2, c->input(5));
      c->set_output(3, u);
      c->set_output(4, c->MakeShape({c->Dim(u, 1)}));
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("TfrnnRecurrence").Device(DEVICE_CPU), ForwardOp);
REGISTER_KERNEL_BUILDER(Name("TfrnnRecurrenceGrad").Device(DEVICE_CPU), BackwardOp);
