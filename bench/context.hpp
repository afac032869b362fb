// The build and machine each benchmark executable records in its JSON context (attn_version,
// attn_commit, cpu_model, isa, isas_supported). Defined once per executable: from libattn's
// runtime_info() in the engine suite, from the kernel library in the kernel suite.
#pragma once

namespace bench {

/// Adds the build and machine description to Google Benchmark's context; call before
/// benchmark::Initialize.
void add_context();

}  // namespace bench
