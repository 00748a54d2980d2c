// safetensors: exact round trips for every dtype, interop with the reference `safetensors`
// package both ways, and one specific rejection per kind of malformed file.
#include <gtest/gtest.h>
#include <torch/types.h>

#include <fstream>
#include <set>

#include "core/error.h"
#include "io/safetensors.h"
#include "io/tensor_file.h"
#include "test_support.h"

namespace distillery {
namespace {

using testing::kPython;
using testing::kSourceDir;

std::vector<uint8_t> file_with_header(const std::string& header, size_t data_bytes, uint64_t declared_length = UINT64_MAX) {
  const uint64_t n = declared_length == UINT64_MAX ? header.size() : declared_length;
  std::vector<uint8_t> bytes(8);
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(n >> (8 * i));
  bytes.insert(bytes.end(), header.begin(), header.end());
  bytes.resize(bytes.size() + data_bytes, 0xAB);
  return bytes;
}

std::string rejection_of(std::vector<uint8_t> bytes) {
  try {
    SafetensorsFile::parse(std::move(bytes), "crafted.safetensors");
  } catch (const Error& e) {
    EXPECT_EQ(e.file(), "crafted.safetensors");
    return e.message();
  }
  return "(accepted)";
}

TEST(Safetensors, RawRoundTripOfEveryDtype) {
  std::vector<std::vector<uint8_t>> payloads;
  std::vector<TensorBytes> tensors;
  for (int d = 0; d < kSafetensorsDtypeCount; ++d) {
    const auto dtype = static_cast<SafetensorsDtype>(d);
    // 8 elements fill whole bytes for every width, including 4- and 6-bit types.
    auto& payload = payloads.emplace_back(8 * dtype_bits(dtype) / 8);
    for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(37 * d + 11 * i + 1);
    tensors.push_back({std::string(dtype_name(dtype)), dtype, {4, 2}, payload});
  }
  tensors.push_back({"scalar", SafetensorsDtype::F64, {}, std::span<const uint8_t>(payloads[static_cast<int>(SafetensorsDtype::F64)]).first(8)});
  tensors.push_back({"empty", SafetensorsDtype::F32, {0, 3}, {}});
  const std::map<std::string, std::string> metadata = {{"config", "{\"a\": 1}"}, {"format_version", "1"}};

  const auto bytes = serialize_safetensors(tensors, metadata);
  const uint64_t header_len = bytes[0] | uint64_t{bytes[1]} << 8;
  EXPECT_EQ((8 + header_len) % 8, 0u) << "data section must start 8-byte aligned";
  const auto file = SafetensorsFile::parse(bytes, "memory");
  EXPECT_EQ(file.metadata(), metadata);
  ASSERT_EQ(file.tensors().size(), tensors.size());
  for (const auto& t : tensors) {
    const auto& record = file.at(t.name);
    EXPECT_EQ(record.dtype, t.dtype) << t.name;
    EXPECT_EQ(record.shape, t.shape) << t.name;
    const auto stored = file.bytes(record);
    EXPECT_TRUE(std::equal(stored.begin(), stored.end(), t.data.begin(), t.data.end())) << t.name;
  }
}

TEST(Safetensors, TorchRoundTripIsBitExact) {
  const auto dir = testing::scratch_dir();
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (int d = 0; d < kSafetensorsDtypeCount; ++d) {
    const auto dtype = static_cast<SafetensorsDtype>(d);
    if (dtype == SafetensorsDtype::F4 || dtype == SafetensorsDtype::F6_E2M3 || dtype == SafetensorsDtype::F6_E3M2) continue;
    // Random bytes reinterpreted as the dtype cover NaN payloads, subnormals and signs.
    const auto element = torch::empty({0}, to_torch_dtype(dtype)).element_size();
    auto raw = torch::randint(0, 256, {3, 5 * element}, torch::kUInt8);
    tensors.emplace_back(std::string(dtype_name(dtype)), raw.view(to_torch_dtype(dtype)));
  }
  save_tensor_file(dir / "all.safetensors", tensors, {{"k", "v"}});
  const auto loaded = load_tensor_file(dir / "all.safetensors");
  EXPECT_EQ(loaded.metadata.at("k"), "v");
  for (const auto& [name, tensor] : tensors) {
    const auto& back = loaded.get(name);
    EXPECT_EQ(back.scalar_type(), tensor.scalar_type()) << name;
    EXPECT_EQ(back.sizes(), tensor.sizes()) << name;
    EXPECT_TRUE(torch::equal(back.view(torch::kUInt8), tensor.view(torch::kUInt8))) << name;
  }
  EXPECT_THROW(loaded.get("missing"), Error);
}

std::vector<std::pair<std::string, at::Tensor>> agreed_tensors() {
  const std::vector<std::pair<std::string, c10::ScalarType>> dtypes = {
      {"BOOL", torch::kBool}, {"U8", torch::kUInt8}, {"I8", torch::kInt8}, {"U16", torch::kUInt16},
      {"I16", torch::kInt16}, {"F16", torch::kFloat16}, {"BF16", torch::kBFloat16}, {"U32", torch::kUInt32},
      {"I32", torch::kInt32}, {"F32", torch::kFloat32}, {"C64", torch::kComplexFloat}, {"F64", torch::kFloat64},
      {"U64", torch::kUInt64}, {"I64", torch::kInt64}, {"F8_E5M2", torch::kFloat8_e5m2}, {"F8_E4M3", torch::kFloat8_e4m3fn}};
  std::vector<std::pair<std::string, at::Tensor>> out;
  const auto base = torch::arange(6, torch::kInt64).reshape({2, 3});
  for (const auto& [name, dtype] : dtypes) {
    at::Tensor t;
    if (dtype == torch::kBool) t = (base % 2).to(dtype);
    else if (at::isFloatingType(dtype) || at::isComplexType(dtype)) t = base.to(torch::kFloat32).to(dtype);
    else t = base.to(dtype);
    out.emplace_back(name, t);
  }
  return out;
}

TEST(Safetensors, PythonReadsOurFiles) {
  if (!testing::python_available()) GTEST_SKIP() << "no project Python at " << kPython << " (run tools/bootstrap.sh)";
  const auto dir = testing::scratch_dir();
  save_tensor_file(dir / "ours.safetensors", agreed_tensors(), {{"origin", "distillery"}});
  const auto result = testing::run_command(kPython + " " + testing::shell_quoted(kSourceDir / "tests/python/safetensors_interop.py") +
                                           " check " + testing::shell_quoted(dir / "ours.safetensors"));
  EXPECT_EQ(result.exit_code, 0) << result.output;
}

TEST(Safetensors, WeReadPythonFiles) {
  if (!testing::python_available()) GTEST_SKIP() << "no project Python at " << kPython << " (run tools/bootstrap.sh)";
  const auto dir = testing::scratch_dir();
  const auto result = testing::run_command(kPython + " " + testing::shell_quoted(kSourceDir / "tests/python/safetensors_interop.py") +
                                           " write " + testing::shell_quoted(dir / "theirs.safetensors"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto loaded = load_tensor_file(dir / "theirs.safetensors");
  EXPECT_EQ(loaded.metadata, (std::map<std::string, std::string>{{"origin", "python"}}));
  const auto expected = agreed_tensors();
  EXPECT_EQ(loaded.tensors.size(), expected.size());
  for (const auto& [name, tensor] : expected) {
    const auto& got = loaded.get(name);
    EXPECT_EQ(got.scalar_type(), tensor.scalar_type()) << name;
    EXPECT_TRUE(torch::equal(got.view(torch::kUInt8), tensor.view(torch::kUInt8))) << name;
  }
}

struct Malformed {
  const char* what;
  std::vector<uint8_t> bytes;
  const char* message_part;
};

TEST(Safetensors, MalformedFilesAreRejectedWithSpecificMessages) {
  const std::string f32x2 = R"("dtype":"F32","shape":[2])";
  const std::vector<Malformed> cases = {
      {"shorter than the length field", {1, 2, 3, 4, 5}, "shorter than the 8-byte header length"},
      {"header length beyond the file", file_with_header("{}", 0, 1000), "runs past the end of the file"},
      {"header length above the limit", file_with_header("{}", 0, uint64_t{1} << 40), "exceeds the limit"},
      {"non-JSON header", file_with_header("{not json", 0), "not valid JSON"},
      {"header not an object", file_with_header("[1, 2]", 0), "does not start with '{'"},
      {"invalid UTF-8", file_with_header("{\"\xff\":1}", 0), "not valid JSON"},
      {"duplicate key", file_with_header("{\"a\":{" + f32x2 + R"(,"data_offsets":[0,8]},"a":{)" + f32x2 + R"(,"data_offsets":[8,16]}})", 16), "duplicate key 'a'"},
      {"unknown dtype", file_with_header(R"({"a":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}})", 16), "unknown dtype \"F128\""},
      {"negative shape", file_with_header(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4), "is not a non-negative integer"},
      {"overflowing shape", file_with_header(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", 4), "too large"},
      {"size mismatch", file_with_header(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "needs 12 bytes"},
      {"overlapping offsets", file_with_header("{\"a\":{" + f32x2 + R"(,"data_offsets":[0,8]},"b":{)" + f32x2 + R"(,"data_offsets":[4,12]}})", 12), "overlap"},
      {"hole between tensors", file_with_header("{\"a\":{" + f32x2 + R"(,"data_offsets":[0,8]},"b":{)" + f32x2 + R"(,"data_offsets":[12,20]}})", 20), "4 unused bytes between tensors 'a'"},
      {"hole before the first tensor", file_with_header("{\"a\":{" + f32x2 + R"(,"data_offsets":[4,12]}})", 12), "unused bytes before the first tensor"},
      {"trailing bytes", file_with_header("{\"a\":{" + f32x2 + R"(,"data_offsets":[0,8]}})", 10), "2 trailing bytes"},
      {"truncated data", file_with_header("{\"a\":{" + f32x2 + R"(,"data_offsets":[0,8]}})", 5), "tensor data ends at byte 8"},
      {"offsets reversed", file_with_header("{\"a\":{" + f32x2 + R"(,"data_offsets":[8,0]}})", 8), "end before they begin"},
      {"missing field", file_with_header("{\"a\":{" + f32x2 + "}}", 0), "missing field 'data_offsets'"},
      {"unexpected field", file_with_header("{\"a\":{" + f32x2 + R"(,"data_offsets":[0,8],"strides":[1]}})", 8), "unexpected field 'strides'"},
      {"non-string metadata", file_with_header(R"({"__metadata__":{"epoch":3}})", 0), "__metadata__ value of 'epoch' is not a string"},
      {"sub-byte partial", file_with_header(R"({"a":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}})", 1), "do not fill whole bytes"},
  };
  std::set<std::string> messages;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    const auto message = rejection_of(c.bytes);
    EXPECT_NE(message.find(c.message_part), std::string::npos) << "got: " << message;
    messages.insert(message);
  }
  EXPECT_EQ(messages.size(), cases.size()) << "each malformation deserves its own message";
}

TEST(Safetensors, MissingFileNamesThePath) {
  try {
    SafetensorsFile::read("/nonexistent/weights.safetensors");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.file(), "/nonexistent/weights.safetensors");
    EXPECT_NE(e.message().find("cannot open"), std::string::npos);
  }
}

}  // namespace
}  // namespace distillery
