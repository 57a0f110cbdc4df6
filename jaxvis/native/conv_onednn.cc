// 2-D convolutions for XLA's CPU backend through oneDNN, as XLA FFI handlers.
//
// XLA's own CPU convolutions (Eigen) reach about two thirds of oneDNN's speed on the wide 3x3
// layers of VGG-like networks.  These handlers compute the forward convolution and its gradient
// with respect to the input (backward data) with oneDNN, on the caller's NHWC buffers.
//
// Layouts: input (..., N, H, W, Cin) and output (..., N, Ho, Wo, Cout) in NHWC order; kernel
// (..., KH, KW, Cin, Cout) in HWIO order.  Leading "..." dimensions come from jax.vmap
// (vmap_method="expand_dims"): when the kernel's leading dimensions are all 1 they fold into the
// batch, otherwise every broadcast index of them runs as its own convolution.
//
// Attributes: stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right, dilation_h,
// dilation_w (dilation 1 = a dense kernel, as in XLA).

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

// The key of the environment this library is built for (machine, jax, jaxlib and oneDNN versions, a
// hash of this source and the flags), given by jaxvis/native/build.py; jaxvis checks it before use.
#ifndef JAXVIS_NATIVE_KEY
#error "JAXVIS_NATIVE_KEY is not defined: build this file with `python -m jaxvis.native.build`"
#endif

namespace ffi = xla::ffi;
using dnnl::memory;

namespace {

struct Geometry {
  int64_t n, h, w, ci, ho, wo, co, kh, kw;
  int64_t sh, sw, pt, pb, pl, pr, dh, dw;
  auto key() const {
    return std::make_tuple(n, h, w, ci, co, kh, kw, sh, sw, pt, pb, pl, pr, dh, dw);
  }
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// Primitives for one geometry: forward, backward data, and the kernel reorders into the layouts
// each of them chose.  They may run concurrently on several threads, each call with its own
// scratchpad (user-managed: oneDNN's library-managed one is shared between concurrent calls).
struct Plan {
  dnnl::convolution_forward fwd;
  dnnl::convolution_backward_data bwd;
  memory::desc fwd_weights, bwd_weights, user_weights, fwd_scratch, bwd_scratch;
  std::unique_ptr<dnnl::reorder> fwd_reorder, bwd_reorder;
};

// Skips oneDNN's GEMM-based (im2col) and reference implementations: they are its fallbacks for
// geometries without a direct kernel (the first returned "invalid arguments" when run inside an XLA
// program, the second is slow), and XLA's own convolution serves those geometries.  Returns false
// when only fallbacks are left.
template <typename PD>
bool SkipFallbacks(PD* pd) {
  for (;;) {
    std::string impl = pd->impl_info_str();
    if (impl.find("gemm") == std::string::npos && impl.find("ref") == std::string::npos) return true;
    if (!pd->next_impl()) return false;
  }
}

// The primitives for a geometry, or nullptr where oneDNN has no direct kernel for it.
std::shared_ptr<Plan> MakePlan(const Geometry& g) {
  auto f32 = memory::data_type::f32;
  auto tag = memory::format_tag::nhwc;
  memory::desc src({g.n, g.ci, g.h, g.w}, f32, tag);
  memory::desc dst({g.n, g.co, g.ho, g.wo}, f32, tag);
  memory::desc any_w({g.co, g.ci, g.kh, g.kw}, f32, memory::format_tag::any);
  memory::dims strides = {g.sh, g.sw};
  memory::dims dilates = {g.dh - 1, g.dw - 1};  // oneDNN counts dilation from 0
  memory::dims pad_l = {g.pt, g.pl};
  memory::dims pad_r = {g.pb, g.pr};
  auto& eng = Engine();
  // Each call brings its own scratchpad: XLA may run the same convolution on several threads at once
  // (one per device), and oneDNN's library-managed scratchpad is shared between them.
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto fwd_pd = dnnl::convolution_forward::primitive_desc(
      eng, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src, any_w,
      dst, strides, dilates, pad_l, pad_r, attr);
  // The forward choice is final before it serves as the backward one's hint (next_impl() frees
  // the implementation the hint points to).
  if (!SkipFallbacks(&fwd_pd)) return nullptr;
  auto bwd_pd = dnnl::convolution_backward_data::primitive_desc(
      eng, dnnl::algorithm::convolution_direct, src, any_w, dst, strides, dilates, pad_l, pad_r,
      fwd_pd, attr);
  if (!SkipFallbacks(&bwd_pd)) return nullptr;
  auto plan = std::make_shared<Plan>();
  plan->fwd = dnnl::convolution_forward(fwd_pd);
  plan->bwd = dnnl::convolution_backward_data(bwd_pd);
  plan->user_weights = memory::desc({g.co, g.ci, g.kh, g.kw}, f32, memory::format_tag::hwio);
  plan->fwd_weights = fwd_pd.weights_desc();
  plan->bwd_weights = bwd_pd.weights_desc();
  plan->fwd_scratch = fwd_pd.scratchpad_desc();
  plan->bwd_scratch = bwd_pd.scratchpad_desc();
  if (plan->fwd_weights != plan->user_weights) {
    plan->fwd_reorder = std::make_unique<dnnl::reorder>(
        dnnl::reorder::primitive_desc(eng, plan->user_weights, eng, plan->fwd_weights));
  }
  if (plan->bwd_weights != plan->user_weights) {
    plan->bwd_reorder = std::make_unique<dnnl::reorder>(
        dnnl::reorder::primitive_desc(eng, plan->user_weights, eng, plan->bwd_weights));
  }
  return plan;
}

std::shared_ptr<Plan> GetPlan(const Geometry& g) {
  static std::mutex mu;
  static std::map<decltype(g.key()), std::shared_ptr<Plan>> plans;
  std::lock_guard<std::mutex> lock(mu);
  auto it = plans.find(g.key());
  if (it != plans.end()) return it->second;
  auto plan = MakePlan(g);
  plans.emplace(g.key(), plan);
  return plan;
}

// A buffer of at least `bytes` that lives with the calling thread and grows as needed: the packed
// kernel and oneDNN's scratchpad of one call.  Reusing it spares each call fresh pages (and their
// page faults); being per thread, concurrent calls never share one.
struct ThreadBuffer {
  void* data = nullptr;
  size_t size = 0;
  ~ThreadBuffer() { std::free(data); }
  void* Get(size_t bytes) {
    if (bytes > size) {
      std::free(data);
      size = (bytes + 4095) / 4096 * 4096;
      data = std::aligned_alloc(4096, size);
      if (!data) size = 0;
    }
    return data;
  }
};

void* PackedBuffer(size_t bytes) {
  thread_local ThreadBuffer buffer;
  return buffer.Get(bytes);
}

void* ScratchBuffer(size_t bytes) {
  thread_local ThreadBuffer buffer;
  return buffer.Get(bytes);
}

// Leading (vmapped) dimensions of the input, kernel and output, broadcast against each other.
struct Groups {
  std::vector<int64_t> sizes;                 // broadcast sizes of the leading dimensions
  std::vector<int64_t> in_step, w_step, out_step;  // element strides (0 where broadcast)
  int64_t count = 1;
};

std::vector<int64_t> Steps(ffi::Span<const int64_t> dims, size_t lead, int64_t inner) {
  std::vector<int64_t> steps(lead);
  for (size_t i = lead; i-- > 0;) {
    steps[i] = dims[i] == 1 ? 0 : inner;
    inner *= dims[i];
  }
  return steps;
}

// x: the convolution's input-shaped buffer, y: its output-shaped one; `in`/`out` are the
// handler's argument and result (x and y forward, dy and dx backward).
ffi::Error Describe(ffi::Span<const int64_t> x_dims, ffi::Span<const int64_t> w_dims,
                    ffi::Span<const int64_t> y_dims, bool forward, int64_t sh, int64_t sw,
                    int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t dh, int64_t dw,
                    bool allow_fold, Geometry* g, Groups* groups) {
  size_t r = x_dims.size();
  if (r < 4 || w_dims.size() != r || y_dims.size() != r) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "jaxvis onednn conv: expected an NHWC input and an HWIO kernel of equal "
                      "rank");
  }
  size_t lead = r - 4;  // vmapped dimensions in front of N (input) and KH (kernel)
  g->kh = w_dims[lead];
  g->kw = w_dims[lead + 1];
  g->ci = w_dims[lead + 2];
  g->co = w_dims[lead + 3];
  g->h = x_dims[r - 3];
  g->w = x_dims[r - 2];
  g->ho = y_dims[r - 3];
  g->wo = y_dims[r - 2];
  if (x_dims[r - 1] != g->ci || y_dims[r - 1] != g->co || x_dims[r - 4] != y_dims[r - 4]) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "jaxvis onednn conv: batch or channel counts of input, kernel and output "
                      "disagree");
  }
  g->sh = sh; g->sw = sw; g->pt = pt; g->pb = pb; g->pl = pl; g->pr = pr; g->dh = dh; g->dw = dw;
  bool fold = allow_fold;  // kernel not vmapped and x, y with the same leading dimensions
  for (size_t i = 0; i < lead; ++i) {
    fold = fold && w_dims[i] == 1 && x_dims[i] == y_dims[i];
  }
  if (fold) {
    g->n = 1;
    for (size_t i = 0; i <= lead; ++i) g->n *= x_dims[i];
    return ffi::Error::Success();
  }
  g->n = x_dims[lead];
  for (size_t i = 0; i < lead; ++i) {
    int64_t s = std::max({x_dims[i], w_dims[i], y_dims[i]});
    for (int64_t d : {x_dims[i], w_dims[i], y_dims[i]}) {
      if (d != 1 && d != s) {
        return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                          "jaxvis onednn conv: leading dimensions do not broadcast");
      }
    }
    groups->sizes.push_back(s);
    groups->count *= s;
  }
  auto x_steps = Steps(x_dims, lead, g->n * g->h * g->w * g->ci);
  auto y_steps = Steps(y_dims, lead, g->n * g->ho * g->wo * g->co);
  groups->w_step = Steps(w_dims, lead, g->kh * g->kw * g->ci * g->co);
  groups->in_step = forward ? x_steps : y_steps;
  groups->out_step = forward ? y_steps : x_steps;
  return ffi::Error::Success();
}

template <bool kForward>
ffi::Error Run(ffi::Buffer<ffi::F32> in, ffi::Buffer<ffi::F32> kernel,
               ffi::ResultBuffer<ffi::F32> out, int64_t sh, int64_t sw, int64_t pt, int64_t pb,
               int64_t pl, int64_t pr, int64_t dh, int64_t dw) {
  // Forward: in = x, out = y.  Backward data: in = dy, out = dx.
  auto x_dims = kForward ? in.dimensions() : out->dimensions();
  auto y_dims = kForward ? out->dimensions() : in.dimensions();
  Geometry g;
  Groups groups;
  auto status = Describe(x_dims, kernel.dimensions(), y_dims, kForward, sh, sw, pt, pb, pl, pr,
                         dh, dw, /*allow_fold=*/true, &g, &groups);
  if (status.failure()) return status;
  try {
    auto plan = GetPlan(g);
    if (!plan && groups.sizes.empty() && x_dims.size() > 4) {
      // No direct kernel for the folded batch: run each vmapped slice at its own batch size, the
      // one JaxvisConvSupported approved when the convolution was traced.
      g = Geometry();
      groups = Groups();
      status = Describe(x_dims, kernel.dimensions(), y_dims, kForward, sh, sw, pt, pb, pl, pr, dh,
                        dw, /*allow_fold=*/false, &g, &groups);
      if (status.failure()) return status;
      plan = GetPlan(g);
    }
    if (!plan) {
      return ffi::Error(ffi::ErrorCode::kUnimplemented,
                        "jaxvis onednn conv: oneDNN has no direct kernel for this convolution; "
                        "use model.with_conv_backend('xla')");
    }
    auto& eng = Engine();
    dnnl::stream stream(eng);
    auto f32 = memory::data_type::f32;
    memory::desc x_md({g.n, g.ci, g.h, g.w}, f32, memory::format_tag::nhwc);
    memory::desc y_md({g.n, g.co, g.ho, g.wo}, f32, memory::format_tag::nhwc);
    const auto& packed_md = kForward ? plan->fwd_weights : plan->bwd_weights;
    auto* reorder = kForward ? plan->fwd_reorder.get() : plan->bwd_reorder.get();
    const auto& scratch_md = kForward ? plan->fwd_scratch : plan->bwd_scratch;
    void* packed_data = reorder ? PackedBuffer(packed_md.get_size()) : nullptr;
    void* scratch_data = ScratchBuffer(std::max<size_t>(scratch_md.get_size(), 1));
    if ((reorder && !packed_data) || !scratch_data) {
      return ffi::Error(ffi::ErrorCode::kResourceExhausted, "jaxvis onednn conv: out of memory");
    }
    memory packed;
    if (reorder) packed = memory(packed_md, eng, packed_data);
    memory scratch(scratch_md, eng, scratch_data);
    const float* in_data = in.typed_data();
    float* out_data = out->typed_data();
    const float* w_data = kernel.typed_data();
    int64_t packed_from = -1;
    for (int64_t i = 0; i < groups.count; ++i) {
      int64_t in_off = 0, w_off = 0, out_off = 0;
      for (size_t d = groups.sizes.size(), rest = i; d-- > 0;) {
        int64_t k = rest % groups.sizes[d];
        rest /= groups.sizes[d];
        in_off += k * groups.in_step[d];
        w_off += k * groups.w_step[d];
        out_off += k * groups.out_step[d];
      }
      memory w_mem(plan->user_weights, eng, const_cast<float*>(w_data + w_off));
      if (reorder) {
        if (w_off != packed_from) reorder->execute(stream, w_mem, packed);
        packed_from = w_off;
        w_mem = packed;
      }
      memory in_mem(kForward ? x_md : y_md, eng, const_cast<float*>(in_data + in_off));
      memory out_mem(kForward ? y_md : x_md, eng, out_data + out_off);
      if (kForward) {
        plan->fwd.execute(stream, {{DNNL_ARG_SRC, in_mem}, {DNNL_ARG_WEIGHTS, w_mem},
                                   {DNNL_ARG_DST, out_mem}, {DNNL_ARG_SCRATCHPAD, scratch}});
      } else {
        plan->bwd.execute(stream, {{DNNL_ARG_DIFF_DST, in_mem}, {DNNL_ARG_WEIGHTS, w_mem},
                                   {DNNL_ARG_DIFF_SRC, out_mem}, {DNNL_ARG_SCRATCHPAD, scratch}});
      }
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("jaxvis onednn conv: ") + e.what() +
                                                   " (status " + std::to_string(e.status) + ")");
  } catch (const std::exception& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("jaxvis onednn conv: ") + e.what());
  }
  return ffi::Error::Success();
}

}  // namespace

// The stamp: jaxvis reads it from the file before loading it (after the marker) and again through
// JaxvisNativeKey() once loaded.
static const char kStamp[] = "jaxvis-native-key:" JAXVIS_NATIVE_KEY;

extern "C" const char* JaxvisNativeKey() { return kStamp + sizeof("jaxvis-native-key:") - 1; }

// Whether oneDNN has direct kernels (forward and backward data) for a geometry: asked when a
// convolution is traced, so that the others go to XLA.
extern "C" int JaxvisConvSupported(int64_t n, int64_t h, int64_t w, int64_t ci, int64_t co,
                                   int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t pt,
                                   int64_t pb, int64_t pl, int64_t pr, int64_t dh, int64_t dw) {
  Geometry g{n, h, w, ci, 0, 0, co, kh, kw, sh, sw, pt, pb, pl, pr, dh, dw};
  g.ho = (h + pt + pb - ((kh - 1) * dh + 1)) / sh + 1;
  g.wo = (w + pl + pr - ((kw - 1) * dw + 1)) / sw + 1;
  if (g.ho <= 0 || g.wo <= 0) return 0;
  try {
    return GetPlan(g) ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

#define JAXVIS_CONV_BINDING                  \
  ffi::Ffi::Bind()                           \
      .Arg<ffi::Buffer<ffi::F32>>()          \
      .Arg<ffi::Buffer<ffi::F32>>()          \
      .Ret<ffi::Buffer<ffi::F32>>()          \
      .Attr<int64_t>("stride_h")             \
      .Attr<int64_t>("stride_w")             \
      .Attr<int64_t>("pad_top")              \
      .Attr<int64_t>("pad_bottom")           \
      .Attr<int64_t>("pad_left")             \
      .Attr<int64_t>("pad_right")            \
      .Attr<int64_t>("dilation_h")           \
      .Attr<int64_t>("dilation_w")

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxvisConvForward, Run<true>, JAXVIS_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxvisConvBackwardData, Run<false>, JAXVIS_CONV_BINDING);
