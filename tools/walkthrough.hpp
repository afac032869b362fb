// `attn walkthrough`: chapter 3, section by section, computed by the engine.
#pragma once

#include <ostream>
#include <string>

namespace attn::tools {

/// Prints every section, or only `section` ("3.3" ... "3.6", "ex3.1" ... "ex3.3") when not
/// empty. Returns the process exit status: 1 when a step failed (it printed "error: ..."),
/// 2 for an unknown section.
int walkthrough(std::ostream& out, const std::string& section);

}  // namespace attn::tools
