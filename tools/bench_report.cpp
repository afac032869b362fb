// Benchmark rows and their output formats (see bench_report.hpp).
#include "bench_report.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <iostream>
#include <sstream>

namespace attn::tools {

Timing Timing::of(std::vector<double> ms) {
  Timing t;
  if (ms.empty()) return t;
  std::sort(ms.begin(), ms.end());
  const std::size_t n = ms.size();
  t.median_ms = n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
  t.min_ms = ms.front();
  t.max_ms = ms.back();
  return t;
}

namespace {

std::string text(const Row::Value& v) {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          return x;
        } else if constexpr (std::is_same_v<T, bool>) {
          return x ? "true" : "false";
        } else if constexpr (std::is_same_v<T, double>) {
          std::ostringstream s;
          s << std::setprecision(std::abs(x) >= 100 ? 6 : 4) << x;
          return s.str();
        } else {
          return std::to_string(x);
        }
      },
      v);
}

}  // namespace

void write_rows(std::ostream& out, const std::string& format, const std::vector<Row>& rows) {
  if (format == "json") {
    nlohmann::ordered_json array = nlohmann::ordered_json::array();
    for (const Row& r : rows) {
      nlohmann::ordered_json o;
      for (const auto& field : r.fields())
        std::visit([&](const auto& x) { o[field.first] = x; }, field.second);
      array.push_back(o);
    }
    out << array.dump(2) << "\n";
    return;
  }
  if (rows.empty()) return;
  std::vector<std::string> names;
  for (const auto& f : rows.front().fields()) names.push_back(f.first);
  if (format == "csv") {
    for (std::size_t i = 0; i < names.size(); ++i) out << (i ? "," : "") << names[i];
    out << "\n";
    for (const Row& r : rows) {
      for (std::size_t i = 0; i < r.fields().size(); ++i)
        out << (i ? "," : "") << text(r.fields()[i].second);
      out << "\n";
    }
    return;
  }
  std::vector<std::size_t> width(names.size());
  for (std::size_t i = 0; i < names.size(); ++i) width[i] = names[i].size();
  for (const Row& r : rows)
    for (std::size_t i = 0; i < r.fields().size() && i < width.size(); ++i)
      width[i] = std::max(width[i], text(r.fields()[i].second).size());
  for (std::size_t i = 0; i < names.size(); ++i)
    out << (i ? "  " : "") << std::setw(static_cast<int>(width[i])) << names[i];
  out << "\n";
  for (const Row& r : rows) {
    for (std::size_t i = 0; i < r.fields().size() && i < width.size(); ++i) {
      out << (i ? "  " : "") << std::setw(static_cast<int>(width[i])) << text(r.fields()[i].second);
    }
    out << "\n";
  }
}

void progress(std::size_t i, std::size_t n, const std::string& label) {
  static const bool tty = isatty(STDERR_FILENO) != 0;
  std::cerr << (tty ? "\r\033[K" : "") << "row " << i << " of " << n << ": " << label
            << (tty ? "" : "\n") << std::flush;
  if (tty && i == n) std::cerr << "\n";
}

}  // namespace attn::tools
