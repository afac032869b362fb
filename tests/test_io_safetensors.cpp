// safetensors: every header validation rule on hand-made corrupt files, dtype conversions,
// and the writer's round trip.
#include <fcntl.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "attn/safetensors.hpp"
#include "io_helpers.hpp"

using attn::ErrorCode;
using attn::Shape;
using attn::Tensor;
using attn::io::DType;
using attn::io::SafetensorsFile;

// Only open() and from_bytes() make a SafetensorsFile: its state is an opaque type behind a
// private constructor.
static_assert(!std::is_default_constructible_v<SafetensorsFile>);
static_assert(!std::is_constructible_v<SafetensorsFile,
                                       std::shared_ptr<const attn::io::detail::SafetensorsData>>);

namespace {

// One F32 tensor "a" of shape [2] at [0, 8].
const std::string kGood = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";

void require_corrupt(const std::vector<std::byte>& bytes,
                     std::initializer_list<std::string_view> fragments) {
  auto file = test::open_both(bytes);
  test::require_error(file.status(), ErrorCode::kCorruptData, fragments);
  CHECK(file.status().message().find("attn_io_test_") != std::string::npos);  // names the file
}

void require_corrupt(std::string_view header, std::size_t data_bytes,
                     std::initializer_list<std::string_view> fragments) {
  require_corrupt(test::safetensors_bytes(header, data_bytes), fragments);
}

std::string one_tensor(std::string_view dtype, std::string_view shape, std::string_view offsets) {
  return std::string(R"({"t":{"dtype":")") + std::string(dtype) + R"(","shape":)" +
         std::string(shape) + R"(,"data_offsets":)" + std::string(offsets) + "}}";
}

}  // namespace

TEST_CASE("io: a minimal safetensors file opens from disk and from memory", "[io][safetensors]") {
  auto file = test::open_both(test::safetensors_bytes(kGood, 8));
  REQUIRE(file.ok());
  REQUIRE(file->tensors().size() == 1);
  const attn::io::TensorInfo& t = file->tensors()[0];
  CHECK(t.name == "a");
  CHECK(t.dtype == DType::kF32);
  CHECK(t.shape == std::vector<std::int64_t>{2});
  CHECK(t.size_bytes == 8);
  CHECK(file->find("a") == &t);
  CHECK(file->find("b") == nullptr);
  CHECK(file->raw(t).size() == 8);
  CHECK(file->metadata().empty());
}

TEST_CASE("io: safetensors: the file must hold a complete header length and header",
          "[io][safetensors]") {
  require_corrupt({}, {"file is empty"});
  require_corrupt(test::to_bytes("abcde"), {"truncated", "5 bytes"});
  require_corrupt(test::safetensors_bytes(kGood, 8, /*header_len=*/std::uint64_t{1} << 60),
                  {"header length 1152921504606846976 runs past the end of the file"});
  require_corrupt(test::safetensors_bytes(kGood, 8, /*header_len=*/kGood.size() + 9),
                  {"runs past the end"});
  require_corrupt(test::safetensors_bytes(kGood, 8, /*header_len=*/UINT64_MAX - 1),
                  {"runs past the end"});
  require_corrupt(test::safetensors_bytes("", 0), {"header length is 0"});
  // A truncated copy of a valid file: the data area is shorter than the offsets say.
  std::vector<std::byte> cut = test::safetensors_bytes(kGood, 8);
  cut.resize(cut.size() - 3);
  require_corrupt(cut, {"tensor 'a'", "data_offsets [0, 8] run past the data area (5 bytes)"});
}

TEST_CASE("io: safetensors: a header over 100 MB is refused before it is parsed",
          "[io][safetensors]") {
  // A sparse file: the length field claims 100'000'001 bytes and the file is that long.
  test::TempFile file(".safetensors");
  const std::uint64_t len = 100'000'001;
  {
    std::vector<std::byte> head;
    test::append(head, &len, 8);
    file.write(head);
  }
  const int fd = ::open(file.path().c_str(), O_WRONLY);
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, static_cast<off_t>(8 + len)) == 0);
  ::close(fd);
  auto opened = SafetensorsFile::open(file.path());
  test::require_error(opened.status(), ErrorCode::kCorruptData,
                      {"exceeds the limit of 100000000 bytes"});
}

TEST_CASE("io: safetensors: the header must be a well-formed JSON object", "[io][safetensors]") {
  require_corrupt(R"({"a":)", 0, {"header is not valid JSON", "parse error"});
  require_corrupt(R"({"a":{}} x)", 0, {"header is not valid JSON"});
  require_corrupt("[1, 2]", 0, {"header is a JSON array; it must be an object"});
  require_corrupt("\"text\"", 0, {"header is a JSON string"});
  require_corrupt("{\"\xff\":1}", 0, {"header is not valid JSON"});  // not UTF-8
  require_corrupt(R"({"a":[[[[[[[[[[1]]]]]]]]]]})", 0, {"nests deeper than 8 levels"});
  require_corrupt(R"({"a":5})", 0, {"tensor 'a'", "entry is a JSON number"});
}

TEST_CASE("io: safetensors: duplicate names and keys are refused at every level",
          "[io][safetensors]") {
  require_corrupt(
      R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}})",
      0, {"duplicate tensor name 'a'"});
  require_corrupt(R"({"a":{"dtype":"F32","dtype":"F16","shape":[0],"data_offsets":[0,0]}})", 0,
                  {"duplicate key 'dtype' in 'a'"});
  require_corrupt(R"({"__metadata__":{"k":"1","k":"2"}})", 0,
                  {"duplicate key 'k' in '__metadata__'"});
  require_corrupt(R"({"__metadata__":{},"__metadata__":{}})", 0,
                  {"duplicate tensor name '__metadata__'"});
}

TEST_CASE("io: safetensors: __metadata__ maps strings to strings", "[io][safetensors]") {
  require_corrupt(R"({"__metadata__":{"num_heads":12}})", 0,
                  {"__metadata__['num_heads'] is a JSON number"});
  require_corrupt(R"({"__metadata__":[1]})", 0, {"__metadata__ is a JSON array"});
  auto file =
      test::open_both(test::safetensors_bytes(R"({"__metadata__":{"format":"pt","x":""}})", 0));
  REQUIRE(file.ok());
  CHECK(file->metadata().at("format") == "pt");
  CHECK(file->metadata().at("x").empty());
  CHECK(file->tensors().empty());
}

TEST_CASE("io: safetensors: each tensor entry has exactly dtype, shape and data_offsets",
          "[io][safetensors]") {
  require_corrupt(R"({"t":{"dtype":"F32","shape":[0]}})", 0,
                  {"tensor 't'", "missing key 'data_offsets'"});
  require_corrupt(R"({"t":{"shape":[0],"data_offsets":[0,0]}})", 0, {"missing key 'dtype'"});
  require_corrupt(R"({"t":{"dtype":"F32","data_offsets":[0,0]}})", 0, {"missing key 'shape'"});
  require_corrupt(R"({"t":{"dtype":"F32","shape":[0],"data_offsets":[0,0],"extra":1}})", 0,
                  {"unexpected key 'extra'"});
  require_corrupt(one_tensor("F33", "[0]", "[0,0]"), 0,
                  {"tensor 't'", "unknown dtype 'F33'", "known: BOOL"});
  require_corrupt(R"({"t":{"dtype":4,"shape":[0],"data_offsets":[0,0]}})", 0,
                  {"dtype is a JSON number"});
  require_corrupt(one_tensor("F32", "2", "[0,8]"), 8, {"shape is a JSON number"});
}

TEST_CASE("io: safetensors: shapes are non-negative integers whose byte size fits in 64 bits",
          "[io][safetensors]") {
  require_corrupt(one_tensor("F32", "[-1]", "[0,0]"), 0,
                  {"tensor 't'", "not an integer in [0, 2^63)"});
  require_corrupt(one_tensor("F32", "[2.5]", "[0,10]"), 10, {"not an integer"});
  require_corrupt(one_tensor("F32", R"(["2"])", "[0,8]"), 8, {"not an integer"});
  require_corrupt(one_tensor("F32", "[9223372036854775808]", "[0,0]"), 0, {"not an integer"});
  require_corrupt(one_tensor("F32", "[4294967296,4294967296]", "[0,0]"), 0, {"overflows 64 bits"});
  require_corrupt(one_tensor("F64", "[2305843009213693952]", "[0,0]"), 0,
                  {"overflows 64 bits"});  // 2^61 * 8
  require_corrupt(one_tensor("F32", "[3]", "[0,8]"), 8,
                  {"data_offsets [0, 8] hold 8 bytes but shape [3] of F32 needs 12"});
  require_corrupt(one_tensor("BF16", "[2,2]", "[0,16]"), 16, {"shape [2, 2] of BF16 needs 8"});
  // A zero in the shape makes the product 0, whatever the other dimensions.
  auto zero = test::open_both(
      test::safetensors_bytes(one_tensor("F32", "[0,9223372036854775807]", "[0,0]"), 0));
  REQUIRE(zero.ok());
}

TEST_CASE("io: safetensors: data_offsets tile the data area exactly", "[io][safetensors]") {
  require_corrupt(one_tensor("F32", "[2]", "[0]"), 8,
                  {"is not [begin, end] of non-negative integers"});
  require_corrupt(one_tensor("F32", "[2]", R"([0,"8"])"), 8, {"is not [begin, end]"});
  require_corrupt(one_tensor("F32", "[2]", "[0,8,16]"), 8, {"is not [begin, end]"});
  require_corrupt(one_tensor("F32", "[2]", "[-8,0]"), 8, {"is not [begin, end]"});
  require_corrupt(one_tensor("F32", "[2]", "[0,100000000000000000000000]"), 8,
                  {"is not [begin, end]"});
  require_corrupt(one_tensor("F32", "[0]", "[8,0]"), 8,
                  {"data_offsets [8, 0] end before they begin"});
  require_corrupt(one_tensor("F32", "[4]", "[0,16]"), 8, {"run past the data area (8 bytes)"});
  require_corrupt(one_tensor("U8", "[]", "[18446744073709551614,18446744073709551615]"), 8,
                  {"run past the data area"});
  require_corrupt(
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
      12, {"tensor 'b'", "overlap tensor 'a' which ends at 8"});
  require_corrupt(
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
      8, {"overlap tensor"});
  require_corrupt(
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
      8, {"tensor 'z'", "overlap tensor 'a'"});
  require_corrupt(one_tensor("F32", "[1]", "[4,8]"), 8,
                  {"leaving a gap of 4 bytes after the header"});
  require_corrupt(
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
      12, {"tensor 'b'", "gap of 4 bytes after tensor 'a'"});
  require_corrupt(kGood, 9, {"data area holds 9 bytes but the tensors cover 8 (1 trailing bytes)"});
}

TEST_CASE("io: safetensors: tensors listed out of order, empty and scalar tensors are valid",
          "[io][safetensors]") {
  const std::string header =
      R"({"late":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"early":{"dtype":"I32","shape":[],"data_offsets":[0,4]},)"
      R"("empty":{"dtype":"F16","shape":[3,0],"data_offsets":[8,8]}})";
  auto file =
      test::open_both(test::safetensors_bytes(header + "    ", 8));  // header padded with spaces
  REQUIRE(file.ok());
  REQUIRE(file->tensors().size() == 3);
  CHECK(file->tensors()[0].name == "early");  // sorted by offset
  CHECK(file->tensors()[1].name == "late");
  CHECK(file->tensors()[2].name == "empty");
  auto empty = file->read("empty");
  REQUIRE(empty.ok());
  CHECK(empty->numel() == 0);
  CHECK(empty->shape().rank() == 2);
  auto scalar = file->read("early");
  REQUIRE(scalar.ok());
  CHECK(scalar->shape().rank() == 0);
  CHECK(scalar->numel() == 1);
  CHECK(scalar->data()[0] == float(0x03020100));  // bytes 0, 1, 2, 3 little-endian
}

TEST_CASE("io: safetensors: read() converts every numeric dtype to float32", "[io][safetensors]") {
  std::vector<std::byte> data;
  const std::uint16_t f16[] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x03FF,
                               0x7C00, 0xFC00, 0x7E00, 0x8000};
  const std::uint16_t bf16[] = {0x3F80, 0xC040, 0x7F80, 0x0001};
  const double f64[] = {0.1, -1e300};
  const std::int64_t i64[] = {-5, 1LL << 40};
  const std::uint8_t flags[] = {0, 1, 2};
  const std::int8_t i8[] = {-128, 127};
  test::append(data, f16, sizeof f16);
  test::append(data, bf16, sizeof bf16);
  test::append(data, f64, sizeof f64);
  test::append(data, i64, sizeof i64);
  test::append(data, flags, sizeof flags);
  test::append(data, i8, sizeof i8);
  const std::string header =
      R"({"h":{"dtype":"F16","shape":[9],"data_offsets":[0,18]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[18,26]},)"
      R"("d":{"dtype":"F64","shape":[2],"data_offsets":[26,42]},"i":{"dtype":"I64","shape":[2],"data_offsets":[42,58]},)"
      R"("m":{"dtype":"BOOL","shape":[3],"data_offsets":[58,61]},"s":{"dtype":"I8","shape":[2],"data_offsets":[61,63]}})";
  std::vector<std::byte> bytes = test::safetensors_bytes(header, 0);
  bytes.insert(bytes.end(), data.begin(), data.end());
  auto file = test::open_both(bytes);
  REQUIRE(file.ok());
  auto h = file->read("h");
  REQUIRE(h.ok());
  CHECK(h->data()[0] == 1.0f);
  CHECK(h->data()[1] == -2.0f);
  CHECK(h->data()[2] == 65504.0f);
  CHECK(h->data()[3] == std::ldexp(1.0f, -24));     // smallest subnormal
  CHECK(h->data()[4] == std::ldexp(1023.0f, -24));  // largest subnormal
  CHECK(h->data()[5] == INFINITY);
  CHECK(h->data()[6] == -INFINITY);
  CHECK(std::isnan(h->data()[7]));
  CHECK((h->data()[8] == 0.0f && std::signbit(h->data()[8])));
  auto b = file->read("b");
  REQUIRE(b.ok());
  CHECK(b->data()[0] == 1.0f);
  CHECK(b->data()[1] == -3.0f);
  CHECK(b->data()[2] == INFINITY);
  CHECK(b->data()[3] == std::ldexp(1.0f, -133));
  auto d = file->read("d");
  REQUIRE(d.ok());
  CHECK(d->data()[0] == 0.1f);
  CHECK(d->data()[1] == -INFINITY);
  auto i = file->read("i");
  REQUIRE(i.ok());
  CHECK(i->data()[0] == -5.0f);
  CHECK(i->data()[1] == std::ldexp(1.0f, 40));
  auto m = file->read("m");
  REQUIRE(m.ok());
  CHECK(m->values() == std::vector<float>{0, 1, 1});
  auto s = file->read("s");
  REQUIRE(s.ok());
  CHECK(s->values() == std::vector<float>{-128, 127});
}

TEST_CASE("io: safetensors: read() errors name the file and tensor", "[io][safetensors]") {
  const std::string header =
      R"({"f8":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]},"r5":{"dtype":"U8","shape":[1,1,1,1,2],"data_offsets":[2,4]}})";
  auto file = test::open_both(test::safetensors_bytes(header, 4));
  REQUIRE(file.ok());
  test::require_error(file->read("nope").status(), ErrorCode::kInvalidArgument,
                      {"no tensor named 'nope'"});
  test::require_error(file->read("f8").status(), ErrorCode::kUnsupported,
                      {"tensor 'f8'", "F8_E4M3"});
  test::require_error(file->read("r5").status(), ErrorCode::kUnsupported,
                      {"tensor 'r5'", "rank 5"});
}

TEST_CASE("io: safetensors writer: F32 round trip with metadata", "[io][safetensors]") {
  const Tensor a(Shape{2, 3}, {1, -2, 3.5f, 0, 1e-30f, -7});
  const Tensor b(Shape{4}, {0.25f, 0.5f, 0.75f, 1});
  const Tensor empty(Shape{0, 5});
  const Tensor scalar(Shape{}, {42});
  const attn::io::NamedTensor tensors[] = {
      {"b", b.view()}, {"a.weight", a.view()}, {"e", empty.view()}, {"s", scalar.view()}};
  const std::map<std::string, std::string> meta = {{"num_heads", "3"}, {"note", "ünïcode"}};
  test::TempFile path(".safetensors");
  REQUIRE(attn::io::write_safetensors(path.path(), tensors, meta).ok());
  auto file = SafetensorsFile::open(path.path());
  REQUIRE(file.ok());
  CHECK(file->metadata() == meta);
  REQUIRE(file->tensors().size() == 4);
  CHECK(file->tensors()[0].name == "b");  // data in the order given
  auto ra = file->read("a.weight");
  REQUIRE(ra.ok());
  CHECK(ra->shape().to_string() == "[2, 3]");
  CHECK(ra->values() == a.values());
  CHECK(file->read("b")->values() == b.values());
  CHECK(file->read("e")->numel() == 0);
  CHECK(file->read("s")->values() == std::vector<float>{42});
  auto bytes = attn::io::encode_safetensors(tensors, meta);
  REQUIRE(bytes.ok());
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, bytes->data(), 8);
  CHECK(header_len % 8 == 0);  // the data area starts 8-byte aligned
}

TEST_CASE("io: safetensors writer: F16 and BF16 round to nearest even", "[io][safetensors]") {
  const float third = 1.0f / 3.0f;
  const Tensor t(Shape{9}, {third, 65519.0f, 65520.0f, 1e-8f, 3e-8f, 2049.0f, 2051.0f, -0.0f, NAN});
  const attn::io::NamedTensor tensors[] = {{"t", t.view()}};
  auto f16 = attn::io::encode_safetensors(tensors, {}, DType::kF16);
  REQUIRE(f16.ok());
  auto h = SafetensorsFile::from_bytes(f16.value());
  REQUIRE(h.ok());
  CHECK(h->tensors()[0].dtype == DType::kF16);
  const std::vector<float> got = h->read("t")->values();
  CHECK(got[0] == 0.333251953125f);  // 0x3555
  CHECK(got[1] == 65504.0f);
  CHECK(got[2] == INFINITY);
  CHECK(got[3] == 0.0f);
  CHECK(got[4] == std::ldexp(1.0f, -24));
  CHECK(got[5] == 2048.0f);  // tie: to even
  CHECK(got[6] == 2052.0f);  // tie: to even
  CHECK((got[7] == 0.0f && std::signbit(got[7])));
  CHECK(std::isnan(got[8]));

  auto bf = attn::io::encode_safetensors(tensors, {}, DType::kBF16);
  REQUIRE(bf.ok());
  auto b = SafetensorsFile::from_bytes(bf.value());
  REQUIRE(b.ok());
  const std::vector<float> gb = b->read("t")->values();
  CHECK(gb[0] == 0.333984375f);  // 0x3EAB
  CHECK(gb[5] == 2048.0f);
  CHECK(std::isnan(gb[8]));
}

TEST_CASE("io: safetensors writer: refuses what it cannot write", "[io][safetensors]") {
  const Tensor a(Shape{2}, {1, 2});
  const attn::io::NamedTensor dup[] = {{"a", a.view()}, {"a", a.view()}};
  test::require_error(attn::io::encode_safetensors(dup).status(), ErrorCode::kInvalidArgument,
                      {"duplicate tensor name 'a'"});
  const attn::io::NamedTensor unnamed[] = {{"", a.view()}};
  test::require_error(attn::io::encode_safetensors(unnamed).status(), ErrorCode::kInvalidArgument,
                      {"not allowed"});
  const attn::io::NamedTensor meta[] = {{"__metadata__", a.view()}};
  test::require_error(attn::io::encode_safetensors(meta).status(), ErrorCode::kInvalidArgument,
                      {"not allowed"});
  const attn::io::NamedTensor null[] = {{"n", attn::ConstTensorView(nullptr, Shape{3})}};
  test::require_error(attn::io::encode_safetensors(null).status(), ErrorCode::kInvalidArgument,
                      {"has no data"});
  const attn::io::NamedTensor ok[] = {{"a", a.view()}};
  test::require_error(attn::io::encode_safetensors(ok, {}, DType::kF64).status(),
                      ErrorCode::kUnsupported, {"F64"});
  test::require_error(attn::io::write_safetensors("/nonexistent-dir/x.safetensors", ok),
                      ErrorCode::kIoError, {"/nonexistent-dir/x.safetensors"});
  test::require_error(SafetensorsFile::open("/nonexistent-dir/x.safetensors").status(),
                      ErrorCode::kIoError, {"/nonexistent-dir/x.safetensors", "cannot open"});
  test::require_error(SafetensorsFile::open("/").status(), ErrorCode::kIoError,
                      {"not a regular file"});
}
