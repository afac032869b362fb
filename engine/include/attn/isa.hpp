// The public name of an instruction set (kept apart so the kernel layer can map to it).
#pragma once

namespace attn {

/// Which instruction set the kernels use. kAuto: the ATTN_ISA environment variable when set
/// (sse2, avx2, avx512), else the best one this CPU supports.
enum class Isa { kAuto, kSse2, kAvx2, kAvx512 };

}  // namespace attn
