// .npy: round trips, versions 1.0-3.0, and every rejection with a clear message.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "attn/npy.hpp"
#include "io_helpers.hpp"

using attn::ErrorCode;
using attn::Shape;
using attn::Tensor;

namespace {

void require_rejected(const std::vector<std::byte>& bytes, ErrorCode code,
                      std::initializer_list<std::string_view> fragments) {
  test::TempFile file(".npy");
  file.write(bytes);
  auto from_file = attn::io::read_npy(file.path());
  test::require_error(from_file.status(), code, fragments);
  CHECK(from_file.status().message().find(file.path()) != std::string::npos);
  auto from_memory = attn::io::parse_npy(bytes, file.path());
  CHECK(from_memory.status().to_string() == from_file.status().to_string());
}

void require_rejected(const std::string& header, std::size_t data_bytes, ErrorCode code,
                      std::initializer_list<std::string_view> fragments) {
  require_rejected(test::npy_bytes(header, data_bytes), code, fragments);
}

}  // namespace

TEST_CASE("io: npy round trip of ranks 0 to 4, empty arrays included", "[io][npy]") {
  const std::vector<Shape> shapes = {Shape{},        Shape{5},          Shape{2, 3},
                                     Shape{3, 1, 7}, Shape{2, 1, 3, 2}, Shape{0, 3}};
  for (const Shape& shape : shapes) {
    CAPTURE(shape.to_string());
    std::vector<float> v(static_cast<std::size_t>(shape.numel()));
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = 0.5f * float(i) - 3.25f;
    const Tensor t(shape, v);
    test::TempFile file(".npy");
    REQUIRE(attn::io::write_npy(file.path(), t.view()).ok());
    auto back = attn::io::read_npy(file.path());
    REQUIRE(back.ok());
    CHECK(back->shape().to_string() == shape.to_string());
    CHECK(back->shape().rank() == shape.rank());
    CHECK(back->values() == v);
    auto bytes = attn::io::encode_npy(t.view());
    REQUIRE(bytes.ok());
    CHECK((bytes->size() - std::size_t(4 * v.size())) % 64 ==
          0);  // data 64-byte aligned, as NumPy does
  }
}

TEST_CASE("io: npy headers of versions 2.0 and 3.0, and NumPy's variations, parse", "[io][npy]") {
  for (int major : {1, 2, 3}) {
    auto t = attn::io::parse_npy(
        test::npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", 16, major));
    REQUIRE(t.ok());
    CHECK(t->shape().to_string() == "[2, 2]");
  }
  // Key order, double quotes, no trailing comma, 1-tuples, Python 2's long suffix.
  auto a = attn::io::parse_npy(
      test::npy_bytes(R"({"shape": (3,), "fortran_order": False, "descr": "<f4"})", 12));
  REQUIRE(a.ok());
  CHECK(a->shape().to_string() == "[3]");
  auto b = attn::io::parse_npy(
      test::npy_bytes("{'descr':'<f4','fortran_order':False,'shape':(2L, 1L)}", 8));
  REQUIRE(b.ok());
  CHECK(b->shape().to_string() == "[2, 1]");
  // Fortran order is C order for rank <= 1.
  auto c = attn::io::parse_npy(
      test::npy_bytes("{'descr': '<f4', 'fortran_order': True, 'shape': (4,), }", 16));
  REQUIRE(c.ok());
}

TEST_CASE("io: npy: files that are not .npy, or of another version, are rejected", "[io][npy]") {
  require_rejected({}, ErrorCode::kCorruptData, {"file is empty"});
  require_rejected(test::to_bytes("PK\x03\x04 this is a zip"), ErrorCode::kCorruptData,
                   {"not a .npy file"});
  require_rejected(test::to_bytes("\x93NUMPY"), ErrorCode::kCorruptData, {"not a .npy file"});
  std::vector<std::byte> v4 =
      test::npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", 4);
  v4[6] = std::byte{4};
  require_rejected(v4, ErrorCode::kUnsupported, {".npy version 4.0"});
  std::vector<std::byte> v11 = v4;
  v11[6] = std::byte{1};
  v11[7] = std::byte{1};
  require_rejected(v11, ErrorCode::kUnsupported, {".npy version 1.1"});
  require_rejected(test::to_bytes(std::string("\x93NUMPY\x02\x00\x10", 9)), ErrorCode::kCorruptData,
                   {"truncated inside the header length"});
  std::vector<std::byte> long_header =
      test::npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", 4);
  long_header[8] = std::byte{0xFF};
  long_header[9] = std::byte{0xFF};
  require_rejected(long_header, ErrorCode::kCorruptData, {"header length 65535 runs past the end"});
}

TEST_CASE("io: npy: only little-endian float32 in C order", "[io][npy]") {
  require_rejected("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", 16,
                   ErrorCode::kUnsupported, {"dtype '<f8' is not supported", "'<f4'"});
  require_rejected("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 8,
                   ErrorCode::kUnsupported, {"'>f4'"});
  require_rejected("{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", 8,
                   ErrorCode::kUnsupported, {"'<i4'"});
  require_rejected("{'descr': [('x', '<f4')], 'fortran_order': False, 'shape': (2,), }", 8,
                   ErrorCode::kCorruptData, {"structured dtypes are not supported"});
  require_rejected("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24,
                   ErrorCode::kUnsupported, {"Fortran"});
  require_rejected("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 1, 2), }", 8,
                   ErrorCode::kUnsupported, {"rank 5"});
}

TEST_CASE("io: npy: malformed headers name the problem", "[io][npy]") {
  require_rejected("{'descr': '<f4', 'fortran_order': False}", 0, ErrorCode::kCorruptData,
                   {"no 'shape'"});
  require_rejected("{'descr': '<f4', 'shape': (1,)}", 4, ErrorCode::kCorruptData,
                   {"no 'fortran_order'"});
  require_rejected("{'fortran_order': False, 'shape': (1,)}", 4, ErrorCode::kCorruptData,
                   {"no 'descr'"});
  require_rejected("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}", 4,
                   ErrorCode::kCorruptData, {"unexpected key 'extra'"});
  require_rejected("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", 4,
                   ErrorCode::kCorruptData, {"duplicate key 'descr'"});
  require_rejected("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}", 4,
                   ErrorCode::kCorruptData, {"non-negative integer"});
  require_rejected("{'descr': '<f4', 'fortran_order': False, 'shape': (2 3)}", 4,
                   ErrorCode::kCorruptData, {"expected ',' or ')'"});
  require_rejected("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", 4,
                   ErrorCode::kCorruptData, {"below 2^63"});
  require_rejected("{'descr': '<f4', 'fortran_order': maybe, 'shape': (1,)}", 4,
                   ErrorCode::kCorruptData, {"not True or False"});
  require_rejected("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} junk", 4,
                   ErrorCode::kCorruptData, {"unexpected text after the dict"});
  require_rejected("{'descr: '<f4'}", 0, ErrorCode::kCorruptData, {"bad header"});
  require_rejected("not a dict", 0, ErrorCode::kCorruptData, {"expected '{'"});
  require_rejected("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296)}", 0,
                   ErrorCode::kCorruptData, {"more elements than fit in 64 bits"});
}

TEST_CASE("io: npy: the data must be exactly as long as the shape says", "[io][npy]") {
  require_rejected("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 20,
                   ErrorCode::kCorruptData,
                   {"shape (2, 3) of float32 needs 24 data bytes but 20 are present (truncated)"});
  require_rejected("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 12,
                   ErrorCode::kCorruptData,
                   {"needs 8 data bytes but 12 are present (trailing bytes)"});
  test::require_error(attn::io::read_npy("/nonexistent-dir/x.npy").status(), ErrorCode::kIoError,
                      {"cannot open"});
  test::require_error(attn::io::write_npy("/nonexistent-dir/x.npy", Tensor(Shape{1}).view()),
                      ErrorCode::kIoError, {"/nonexistent-dir/x.npy"});
  test::require_error(attn::io::encode_npy(attn::ConstTensorView(nullptr, Shape{2})).status(),
                      ErrorCode::kInvalidArgument, {"no data"});
  test::require_error(attn::io::encode_npy(attn::ConstTensorView(nullptr, Shape{-1})).status(),
                      ErrorCode::kInvalidArgument, {"invalid shape"});
}
