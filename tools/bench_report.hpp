// Rows of benchmark results and their table / csv / json output (for attn bench).
#pragma once

#include <cstdio>
#include <ostream>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

namespace attn::tools {

/// Median, min and max of timings in milliseconds (no percentiles: a handful of samples
/// cannot tell a p99 from the max).
struct Timing {
  double median_ms = 0, min_ms = 0, max_ms = 0;
  static Timing of(std::vector<double> ms);
};

/// One result row: ordered (name, value) pairs; values are numbers, strings or booleans.
class Row {
 public:
  using Value = std::variant<double, std::int64_t, std::string, bool>;
  Row& set(const std::string& name, Value v) {
    fields_.emplace_back(name, std::move(v));
    return *this;
  }
  const std::vector<std::pair<std::string, Value>>& fields() const { return fields_; }

 private:
  std::vector<std::pair<std::string, Value>> fields_;
};

/// Writes rows as "table" (aligned columns), "csv" or "json" (an array of objects).
void write_rows(std::ostream& out, const std::string& format, const std::vector<Row>& rows);

/// Shows "row i of n: label" on stderr, overwriting the line when stderr is a terminal.
void progress(std::size_t i, std::size_t n, const std::string& label);

}  // namespace attn::tools
