// Fuzzes the attn command line: any bytes become an argument vector of `attn run`,
// `attn info` or `attn bench` (flags drawn from each subcommand's own, values from small
// sizes, hostile numbers and raw bytes; files from the test fixtures, corrupt ones included)
// and run through run_cli(), the function main() calls. It must return 0, 1 or 2: never
// crash, hang, or allocate outside a checked path. Sizes are capped so a run stays small:
// a size is tiny, or so large that its allocation fails at once; `bench --decode` (a 256 MiB
// bandwidth probe per row) and `--preset` (gpt2-small) are not drawn, and raw bytes are only
// ever values of string flags or stray positional arguments.
#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "cli.hpp"

namespace {

class Bytes {
 public:
  Bytes(const std::uint8_t* d, std::size_t n) : d_(d), n_(n) {}
  bool empty() const { return i_ >= n_; }
  std::uint8_t byte() { return i_ < n_ ? d_[i_++] : 0; }
  template <std::size_t N>
  const char* pick(const char* const (&options)[N]) {
    return options[byte() % N];
  }
  // Up to 12 raw bytes as one argument (any text, NUL stops it). Never a flag: the fuzzer
  // would find "--decode" or "--seq-len=1000000" through the parser's comparisons, and those
  // are slow by design, not by fault.
  std::string raw() {
    std::string s;
    for (int n = byte() % 13; n > 0 && !empty(); --n) {
      const char c = static_cast<char>(byte());
      if (c == '\0') break;
      s += c;
    }
    if (!s.empty() && s[0] == '-') s[0] = 'x';
    return s;
  }

 private:
  const std::uint8_t* d_;
  std::size_t n_;
  std::size_t i_ = 0;
};

const std::string kData = ATTN_TEST_DATA_DIR;

// Values of size flags: tiny, zero, negative, malformed, or too large to allocate.
constexpr const char* kSizes[] = {"1",
                                  "2",
                                  "3",
                                  "4",
                                  "7",
                                  "8",
                                  "16",
                                  "0",
                                  "-1",
                                  "1e3",
                                  "x",
                                  "",
                                  "1099511627776",
                                  "9223372036854775807",
                                  "99999999999999999999",
                                  "2,3",
                                  "1,,2"};
// attn bench's sizes: no value the parser accepts is large. A size that passes the flag's
// check but not the allocation (2^40 tokens) is refused with a Status in a plain build (see
// tests/cli_hardening.sh), but ASan's throwing operator new aborts instead of throwing.
constexpr const char* kBenchSizes[] = {"1",
                                       "2",
                                       "3",
                                       "4",
                                       "7",
                                       "8",
                                       "16",
                                       "0",
                                       "-1",
                                       "1e3",
                                       "x",
                                       "",
                                       "9223372036854775807",
                                       "99999999999999999999",
                                       "2,3",
                                       "1,,2"};
constexpr const char* kThreads[] = {"0", "1", "2", "3", "8", "1024", "1025", "-1", "1,2", "nan"};
constexpr const char* kReals[] = {"0",   "1e-5", "1",     "-1",  "nan",
                                  "inf", "-inf", "1e999", "abc", "0x10"};
constexpr const char* kReps[] = {"0", "1", "2", "-1", "x"};
constexpr const char* kBackends[] = {"tbb", "openmp", "serial", "tbb,serial", "gpu", ""};
constexpr const char* kIsas[] = {"auto", "sse2", "avx2", "avx512", "neon"};
constexpr const char* kLayouts[] = {"auto",      "v1",   "v2",       "causal",   "wrapper", "mha",
                                    "torch-mha", "gpt2", "hf-llama", "gpt-neox", "bert"};
constexpr const char* kPrefixes[] = {"h.0", "h.1", "h.", "", "x"};
constexpr const char* kWeights[] = {"mha_b3.safetensors",
                                    "v1_book.safetensors",
                                    "causal_b3.safetensors",
                                    "wrapper_b1.safetensors",
                                    "torch_mha_b1.safetensors",
                                    "gpt2_2layers.safetensors",
                                    "mha_f16.safetensors",
                                    "causal_bf16.safetensors",
                                    "corrupt/truncated.safetensors",
                                    "corrupt/huge_header.safetensors",
                                    "corrupt/bad_json.safetensors",
                                    "corrupt/overlap.safetensors",
                                    "mha_b3.input.npy",
                                    "missing.safetensors",
                                    "."};
constexpr const char* kInputs[] = {
    "mha_b3.input.npy",       "v1_book.input.npy",    "causal_b3.input.npy",
    "gpt2_2layers.input.npy", "wrapper_b1.input.npy", "corrupt/f64.npy",
    "mha_b3.safetensors",     "missing.npy",          "."};
constexpr const char* kExpects[] = {"mha_b3.output.npy", "v1_book.output.npy",
                                    "causal_b3.output.npy", "corrupt/f64.npy", "missing.npy"};

std::string data(const char* name) { return kData + "/" + name; }

void run_args(Bytes& in, std::vector<std::string>& args) {
  args.push_back("run");
  args.push_back("--weights");
  args.push_back(data(in.pick(kWeights)));
  args.push_back("--input");
  args.push_back(data(in.pick(kInputs)));
  const std::size_t fixed = args.size();
  for (int n = in.byte() % 8; n > 0 && !in.empty(); --n) {
    switch (in.byte() % 16) {
      case 0:
        args.insert(args.end(), {"--expect", data(in.pick(kExpects))});
        break;
      case 1:
        args.insert(args.end(), {"--atol", in.pick(kReals)});
        break;
      case 2:
        args.insert(args.end(), {"--rtol", in.pick(kReals)});
        break;
      case 3:
        args.insert(args.end(), {"--num-heads", in.pick(kSizes)});
        break;
      case 4:
        args.insert(args.end(), {"--heads", in.pick(kSizes)});
        break;
      case 5:
        args.insert(args.end(), {"--context-length", in.pick(kSizes)});
        break;
      case 6:
        args.insert(args.end(), {"--layout", in.pick(kLayouts)});
        break;
      case 7:
        args.insert(args.end(),
                    {"--prefix", in.byte() & 1 ? std::string(in.pick(kPrefixes)) : in.raw()});
        break;
      case 8:
        args.push_back(in.byte() & 1 ? "--causal" : "--no-causal");
        break;
      case 9:
        args.push_back("--decode");
        break;
      case 10:
        args.insert(args.end(), {"--threads", in.pick(kThreads)});
        break;
      case 11:
        args.insert(args.end(), {"--backend", in.pick(kBackends)});
        break;
      case 12:
        args.insert(args.end(), {"--isa", in.pick(kIsas)});
        break;
      case 13:
        args.push_back("-v");
        break;
      case 14:
        args.push_back(in.raw());
        break;
      default:  // drop the last drawn argument: a flag without its value
        if (args.size() > fixed) args.pop_back();
        break;
    }
  }
  // Last, so that no drawn flag can take it as its value or leave "--output" swallowing the
  // next argument as a file name to write.
  args.insert(args.end(), {"--output", "/dev/null"});
}

void info_args(Bytes& in, std::vector<std::string>& args) {
  args.push_back("info");
  args.push_back(data(in.byte() & 1 ? in.pick(kWeights) : in.pick(kInputs)));
  for (int n = in.byte() % 4; n > 0 && !in.empty(); --n) {
    switch (in.byte() % 6) {
      case 0:
        args.insert(args.end(), {"--layout", in.pick(kLayouts)});
        break;
      case 1:
        args.insert(args.end(), {"--prefix", in.pick(kPrefixes)});
        break;
      case 2:
        args.insert(args.end(), {"--heads", in.pick(kSizes)});
        break;
      case 3:
        args.insert(args.end(), {"--context-length", in.pick(kSizes)});
        break;
      case 4:
        args.push_back(in.raw());
        break;
      default:
        args.push_back("--no-causal");
        break;
    }
  }
}

void bench_args(Bytes& in, std::vector<std::string>& args) {
  // Small defaults, replaced (not repeated: a repeated flag is a usage error) when drawn.
  std::vector<std::pair<std::string, std::string>> flags = {
      {"--batch", "1"},  {"--seq-len", "4"}, {"--d-model", "8"}, {"--num-heads", "2"},
      {"--warmup", "0"}, {"--reps", "1"},    {"--format", "csv"}};
  auto set = [&](const std::string& name, const std::string& value) {
    for (auto& [n, v] : flags) {
      if (n == name) {
        v = value;
        return;
      }
    }
    flags.emplace_back(name, value);
  };
  std::vector<std::string> extra;
  for (int n = in.byte() % 6; n > 0 && !in.empty(); --n) {
    switch (in.byte() % 12) {
      case 0:
        set("--batch", in.pick(kBenchSizes));
        break;
      case 1:
        set("--seq-len", in.pick(kBenchSizes));
        break;
      case 2:
        set("--d-model", in.pick(kBenchSizes));
        break;
      case 3:
        set("--num-heads", in.pick(kBenchSizes));
        break;
      case 4:
        set("--threads", in.pick(kThreads));
        break;
      case 5:
        set("--backend", in.pick(kBackends));
        break;
      case 6:
        set("--isa", in.pick(kIsas));
        break;
      case 7:
        set("--impl", in.byte() & 1 ? "unfused" : "fused,unfused");
        break;
      case 8:
        set("--reps", in.pick(kReps));
        break;
      case 9:
        set("--format", in.byte() & 1 ? "json" : "table");
        break;
      case 10:
        extra.push_back(in.byte() & 1 ? "--no-causal" : "--causal");
        break;
      default:
        set(in.byte() & 1 ? "--format" : "--impl", in.raw());
        break;  // strings only
    }
  }
  args.push_back("bench");
  for (const auto& [n, v] : flags) args.insert(args.end(), {n, v});
  args.insert(args.end(), extra.begin(), extra.end());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Results and tables go to stdout: discard them (errors stay on stderr).
  const int null = ::open("/dev/null", O_WRONLY);
  if (null >= 0) ::dup2(null, STDOUT_FILENO);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  Bytes in(bytes, size);
  std::vector<std::string> args = {"attn"};
  switch (in.byte() % 3) {
    case 0:
      run_args(in, args);
      break;
    case 1:
      info_args(in, args);
      break;
    default:
      bench_args(in, args);
      break;
  }
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  argv.push_back(nullptr);
  const int rc = attn::tools::run_cli(static_cast<int>(args.size()), argv.data());
  if (rc < 0 || rc > 2) std::abort();  // exit codes are 0, 1 or 2 (docs/io.md)
  return 0;
}
