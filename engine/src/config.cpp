// LayerConfig presets, validation of layers and run options, and names.
#include "attn/config.hpp"

#include <cmath>
#include <cstdio>
#include <string>

#include "kernels/isa.hpp"

namespace attn {
namespace {

// Generous upper bounds that keep every size product far from int64 overflow; real models
// are orders of magnitude smaller.
constexpr std::int64_t kMaxFeatures = std::int64_t{1} << 20;
constexpr std::int64_t kMaxContext = std::int64_t{1} << 30;
constexpr int kMaxThreads = 1024;

Status invalid(std::string message) { return {ErrorCode::kInvalidArgument, std::move(message)}; }

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

Status check_range(const char* name, std::int64_t value, std::int64_t lo, std::int64_t hi) {
  if (value < lo || value > hi) {
    return invalid(std::string(name) + " = " + std::to_string(value) + " is out of range [" +
                   std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return {};
}

}  // namespace

LayerConfig LayerConfig::chapter(Variant variant, std::int64_t d_in, std::int64_t d_out,
                                 std::int64_t num_heads, std::int64_t context_length) {
  LayerConfig c;
  c.variant = variant;
  c.d_in = d_in;
  c.d_out = d_out;
  c.num_heads = num_heads;
  c.context_length = context_length;
  return c;
}

LayerConfig LayerConfig::gpt2_small() {
  LayerConfig c = chapter(Variant::kMultiHeadAttention, 768, 768, 12, 1024);
  c.qkv_bias = true;
  return c;
}

double LayerConfig::resolved_scale() const noexcept {
  if (scale != 0) return scale;
  if (variant == Variant::kSimplified) return 1.0;
  return 1.0 / std::sqrt(static_cast<double>(resolved_head_dim()));
}

bool LayerConfig::causal() const noexcept {
  switch (mask) {
    case Mask::kNone:
      return false;
    case Mask::kCausal:
      return true;
    case Mask::kVariant:
      break;
  }
  return variant == Variant::kCausalAttention || variant == Variant::kMultiHeadWrapper ||
         variant == Variant::kMultiHeadAttention;
}

Status validate(const LayerConfig& c) {
  if (Status s = check_range("d_in", c.d_in, 1, kMaxFeatures); !s.ok()) return s;
  if (Status s = check_range("d_out", c.d_out, 1, kMaxFeatures); !s.ok()) return s;
  if (Status s = check_range("num_heads", c.num_heads, 1, kMaxFeatures); !s.ok()) return s;
  if (Status s = check_range("context_length", c.context_length, 1, kMaxContext); !s.ok()) return s;
  if (Status s = check_range("window", c.window, 0, kMaxContext); !s.ok()) return s;
  if (Status s = check_range("num_kv_heads", c.num_kv_heads, 0, c.num_heads); !s.ok()) return s;
  if (c.num_kv_heads > 0 && c.num_heads % c.num_kv_heads != 0) {
    return invalid("num_heads = " + std::to_string(c.num_heads) +
                   " is not divisible by num_kv_heads = " + std::to_string(c.num_kv_heads));
  }
  if (Status s = check_range("head_dim", c.head_dim, 0, kMaxFeatures); !s.ok()) return s;
  if (c.head_dim == 0 && c.d_out % c.num_heads != 0) {
    return invalid("d_out = " + std::to_string(c.d_out) + " is not divisible by num_heads = " +
                   std::to_string(c.num_heads) + " (or give head_dim)");
  }
  if (c.head_dim > 0 && c.num_heads * c.head_dim > kMaxFeatures) {
    return invalid("num_heads = " + std::to_string(c.num_heads) + " x head_dim = " +
                   std::to_string(c.head_dim) + " exceeds " + std::to_string(kMaxFeatures));
  }
  if (c.variant != Variant::kMultiHeadAttention) {
    if (c.kv_heads() != c.num_heads) {
      return invalid(
          std::string("variant ") + to_string(c.variant) +
          " has num_kv_heads = num_heads; got num_kv_heads = " + std::to_string(c.num_kv_heads) +
          ", num_heads = " + std::to_string(c.num_heads) +
          " (grouped-query attention needs variant mha)");
    }
    if (c.q_dim() != c.d_out) {
      return invalid(
          std::string("variant ") + to_string(c.variant) +
          " outputs its heads side by side, so num_heads x head_dim must equal d_out; got " +
          std::to_string(c.num_heads) + " x " + std::to_string(c.head_dim) +
          " != " + std::to_string(c.d_out));
    }
  }
  if (!std::isfinite(c.scale) || c.scale < 0) {
    return invalid("scale = " + number(c.scale) + " must be finite and > 0 (0: 1/sqrt(head_dim))");
  }
  if (c.rope != Rope::kNone) {
    if (c.variant == Variant::kSimplified) {
      return invalid("variant simplified has no projections to rotate: rope must be none");
    }
    if (!std::isfinite(c.rope_theta) || c.rope_theta <= 0) {
      return invalid("rope_theta = " + number(c.rope_theta) + " must be finite and > 0");
    }
    const std::int64_t head_dim = c.resolved_head_dim();
    if (c.rope_dim < 0 || c.rope_dim > head_dim || c.rope_dim % 2 != 0) {
      return invalid("rope_dim = " + std::to_string(c.rope_dim) +
                     " must be even and in [0, head_dim = " + std::to_string(head_dim) +
                     "] (0: head_dim)");
    }
    if (c.rope_dim == 0 && head_dim % 2 != 0) {
      return invalid("rope_dim = head_dim = " + std::to_string(head_dim) +
                     " must be even (give an even rope_dim for a partial rotary)");
    }
  }
  if (!std::isfinite(c.softcap) || c.softcap < 0) {
    return invalid("softcap = " + number(c.softcap) +
                   " must be finite and > 0 (0: no soft-capping)");
  }
  if (c.alibi && c.rope != Rope::kNone) {
    return invalid(std::string("alibi and rope = ") + to_string(c.rope) +
                   " cannot be combined (ALiBi is the position signal; use rope none)");
  }
  const bool single_head =
      c.variant == Variant::kSimplified || c.variant == Variant::kSelfAttentionV1 ||
      c.variant == Variant::kSelfAttentionV2 || c.variant == Variant::kCausalAttention;
  if (single_head && c.num_heads != 1) {
    return invalid(std::string("variant ") + to_string(c.variant) +
                   " has one head, not num_heads = " + std::to_string(c.num_heads));
  }
  if (c.variant == Variant::kSimplified && c.d_out != c.d_in) {
    return invalid("variant simplified has no weights, so d_out must equal d_in; got d_in = " +
                   std::to_string(c.d_in) + ", d_out = " + std::to_string(c.d_out));
  }
  if ((c.variant == Variant::kSimplified || c.variant == Variant::kSelfAttentionV1) && c.qkv_bias) {
    return invalid(std::string("variant ") + to_string(c.variant) +
                   " has no bias; qkv_bias must be false");
  }
  // CausalAttention and the wrapper of CausalAttention heads are causal by definition. (3.3
  // and 3.4 have no mask unless asked: section 3.5.1 masks v2's weights itself.)
  if ((c.variant == Variant::kCausalAttention || c.variant == Variant::kMultiHeadWrapper) &&
      c.mask == Mask::kNone) {
    return invalid(std::string("variant ") + to_string(c.variant) +
                   " contradicts mask none: " + to_string(c.variant) +
                   " is causal by definition (use mask variant or causal, or variant mha or v2 "
                   "for attention without a mask)");
  }
  if (c.window > 0 && !c.causal()) {
    return invalid("window = " + std::to_string(c.window) + " needs causal attention (variant " +
                   to_string(c.variant) + ", mask " + to_string(c.mask) + ")");
  }
  return {};
}

std::vector<double> alibi_slopes(std::int64_t num_heads) {
  std::vector<double> slopes;
  if (num_heads <= 0) return slopes;
  slopes.reserve(static_cast<std::size_t>(num_heads));
  std::int64_t p = 1;  // the largest power of two <= num_heads
  while (p * 2 <= num_heads) p *= 2;
  const auto pd = static_cast<double>(p);
  for (std::int64_t i = 1; i <= p; ++i)
    slopes.push_back(std::exp2(-8.0 * static_cast<double>(i) / pd));
  // The remaining heads take slopes 1, 3, 5, ... of the sequence for 2p heads.
  for (std::int64_t i = 0; i < num_heads - p; ++i)
    slopes.push_back(std::exp2(-8.0 * static_cast<double>(2 * i + 1) / (2.0 * pd)));
  return slopes;
}

Status validate(const RunOptions& o) {
  if (Status s = check_range("threads", o.threads, 0, kMaxThreads); !s.ok()) return s;
  if (o.max_workspace_bytes < 0) {
    return invalid("max_workspace_bytes = " + std::to_string(o.max_workspace_bytes) +
                   " must be >= 0");
  }
  // Names the engine accepts at all; what this build and CPU can run is create()'s check.
  if (o.weight_dtype != DType::kF32 && o.weight_dtype != DType::kBf16 &&
      o.weight_dtype != DType::kF16) {
    return invalid(std::string("weight_dtype = ") + to_string(o.weight_dtype) +
                   " must be f32, bf16 or f16");
  }
  if (o.compute_dtype != DType::kF32 && o.compute_dtype != DType::kBf16) {
    return invalid(std::string("compute_dtype = ") + to_string(o.compute_dtype) +
                   " must be f32 or bf16");
  }
  if (o.compute_dtype == DType::kBf16 && o.weight_dtype != DType::kBf16) {
    return invalid(std::string("compute_dtype = bf16 multiplies bf16 weights: set weight_dtype = "
                               "bf16 too (weight_dtype = ") +
                   to_string(o.weight_dtype) + ")");
  }
  if (std::string_view(to_string(o.kv_dtype)) == "unknown") {
    return invalid("kv_dtype = " + std::to_string(static_cast<int>(o.kv_dtype)) +
                   " must be f32, bf16, f16 or int8");
  }
  return {};
}

const char* to_string(Variant v) noexcept {
  switch (v) {
    case Variant::kSimplified:
      return "simplified";
    case Variant::kSelfAttentionV1:
      return "v1";
    case Variant::kSelfAttentionV2:
      return "v2";
    case Variant::kCausalAttention:
      return "causal";
    case Variant::kMultiHeadWrapper:
      return "wrapper";
    case Variant::kMultiHeadAttention:
      return "mha";
  }
  return "unknown";
}

const char* to_string(Backend b) noexcept {
  switch (b) {
    case Backend::kTbb:
      return "tbb";
    case Backend::kOpenMp:
      return "openmp";
    case Backend::kSerial:
      return "serial";
  }
  return "unknown";
}

const char* to_string(Mask m) noexcept {
  switch (m) {
    case Mask::kVariant:
      return "variant";
    case Mask::kNone:
      return "none";
    case Mask::kCausal:
      return "causal";
  }
  return "unknown";
}

const char* to_string(Rope r) noexcept {
  switch (r) {
    case Rope::kNone:
      return "none";
    case Rope::kNeox:
      return "neox";
    case Rope::kGptj:
      return "gptj";
  }
  return "unknown";
}

const char* to_string(Isa isa) noexcept {
  const std::optional<kernels::Isa> k = kernels::from_public(isa);
  if (isa == Isa::kAuto) return "auto";
  return k ? kernels::isa_name(*k) : "unknown";
}

namespace {
template <class E, std::size_t N>
Result<E> parse(std::string_view what, std::string_view name, const E (&all)[N]) {
  std::string names;
  for (E e : all) {
    if (name == to_string(e)) return e;
    names += names.empty() ? "" : ", ";
    names += to_string(e);
  }
  return Status(ErrorCode::kInvalidArgument, "unknown " + std::string(what) + " '" +
                                                 std::string(name) +
                                                 "' (expected one of: " + names + ")");
}
}  // namespace

Result<Variant> parse_variant(std::string_view name) {
  static constexpr Variant kAll[] = {Variant::kSimplified,       Variant::kSelfAttentionV1,
                                     Variant::kSelfAttentionV2,  Variant::kCausalAttention,
                                     Variant::kMultiHeadWrapper, Variant::kMultiHeadAttention};
  return parse("variant", name, kAll);
}

Result<Rope> parse_rope(std::string_view name) {
  static constexpr Rope kAll[] = {Rope::kNone, Rope::kNeox, Rope::kGptj};
  return parse("rope", name, kAll);
}

Result<Backend> parse_backend(std::string_view name) {
  static constexpr Backend kAll[] = {Backend::kTbb, Backend::kOpenMp, Backend::kSerial};
  return parse("backend", name, kAll);
}

Result<Isa> parse_isa(std::string_view name) {
  static constexpr Isa kAll[] = {Isa::kAuto, Isa::kSse2, Isa::kAvx2, Isa::kAvx512};
  return parse("instruction set", name, kAll);
}

}  // namespace attn
