#include "data/fashion_mnist.h"

#include <fmt/format.h>
#include <torch/types.h>
#include <zlib.h>

#include <cstdlib>
#include <vector>

#include "core/error.h"

namespace distillery {

namespace {
constexpr uint32_t kImagesMagic = 0x00000803, kLabelsMagic = 0x00000801;
// Larger than any real IDX file; bounds what a corrupt size field can make us allocate.
constexpr uint64_t kMaxIdxBytes = uint64_t{1} << 32;

// Reads the whole file through zlib, which passes plain (uncompressed) files through unchanged.
std::vector<uint8_t> read_maybe_gzip(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path))
    throw Error("dataset file not found")
        .file(path.string())
        .hint("Fashion-MNIST comes from Debian's package: apt-get install dataset-fashion-mnist "
              "(or set DISTILLERY_FASHION_MNIST_DIR to a folder holding the four IDX files)");
  gzFile file = gzopen(path.c_str(), "rb");
  DISTILLERY_CHECK(file != nullptr, Error("cannot open dataset file").file(path.string()));
  std::vector<uint8_t> bytes;
  std::vector<uint8_t> chunk(1 << 20);
  int n = 0;
  while ((n = gzread(file, chunk.data(), static_cast<unsigned>(chunk.size()))) > 0) bytes.insert(bytes.end(), chunk.begin(), chunk.begin() + n);
  int zerr = Z_OK;
  const std::string zmessage = n < 0 ? gzerror(file, &zerr) : "";
  gzclose(file);
  DISTILLERY_CHECK(n == 0, Error(fmt::format("dataset file is corrupt or truncated ({})", zmessage)).file(path.string()));
  return bytes;
}

uint32_t be32(const std::vector<uint8_t>& b, size_t at) {
  return uint32_t{b[at]} << 24 | uint32_t{b[at + 1]} << 16 | uint32_t{b[at + 2]} << 8 | b[at + 3];
}

// Validates magic and sizes; returns the dimensions.
std::vector<int64_t> idx_dims(const std::vector<uint8_t>& bytes, uint32_t magic, const std::filesystem::path& path) {
  const size_t rank = magic & 0xff;
  DISTILLERY_CHECK(bytes.size() >= 4 + 4 * rank, Error("IDX file is truncated inside its header").file(path.string()).got(fmt::format("{} bytes", bytes.size())));
  DISTILLERY_CHECK(be32(bytes, 0) == magic, Error("wrong IDX magic number").file(path.string())
                                                .expected(fmt::format("0x{:08x} ({})", magic, rank == 3 ? "uint8 images" : "uint8 labels"))
                                                .got(fmt::format("0x{:08x}", be32(bytes, 0))));
  std::vector<int64_t> dims;
  uint64_t total = 1;
  for (size_t i = 0; i < rank; ++i) {
    dims.push_back(be32(bytes, 4 + 4 * i));
    total *= static_cast<uint64_t>(dims.back());
    DISTILLERY_CHECK(total <= kMaxIdxBytes, Error("IDX sizes are implausibly large").file(path.string()));
  }
  const uint64_t expected = 4 + 4 * rank + total;
  DISTILLERY_CHECK(bytes.size() == expected, Error(bytes.size() < expected ? "IDX file is truncated" : "IDX file has trailing bytes")
                                                 .file(path.string())
                                                 .expected(fmt::format("{} bytes", expected))
                                                 .got(fmt::format("{} bytes", bytes.size())));
  return dims;
}
}  // namespace

LabeledImages read_idx_dataset(const std::filesystem::path& images_path, const std::filesystem::path& labels_path) {
  const auto image_bytes = read_maybe_gzip(images_path);
  const auto label_bytes = read_maybe_gzip(labels_path);
  const auto image_dims = idx_dims(image_bytes, kImagesMagic, images_path);
  const auto label_dims = idx_dims(label_bytes, kLabelsMagic, labels_path);
  DISTILLERY_CHECK(image_dims[0] == label_dims[0], Error("image and label counts differ")
                                                       .file(labels_path.string())
                                                       .expected(fmt::format("{} labels (as in {})", image_dims[0], images_path.string()))
                                                       .got(std::to_string(label_dims[0])));
  LabeledImages out;
  out.images = torch::from_blob(const_cast<uint8_t*>(image_bytes.data()) + 16, {image_dims[0], 1, image_dims[1], image_dims[2]}, torch::kUInt8).clone();
  out.labels = torch::from_blob(const_cast<uint8_t*>(label_bytes.data()) + 8, {label_dims[0]}, torch::kUInt8).to(torch::kInt64);
  return out;
}

std::filesystem::path fashion_mnist_dir() {
  if (const char* dir = std::getenv("DISTILLERY_FASHION_MNIST_DIR")) return dir;
  return "/usr/share/datasets/fashion-mnist";
}

LabeledImages load_fashion_mnist(const std::string& split) {
  DISTILLERY_CHECK(split == "train" || split == "test", Error(fmt::format("unknown Fashion-MNIST split '{}'", split)).expected("train or test"));
  const std::string prefix = split == "train" ? "train" : "t10k";
  const auto dir = fashion_mnist_dir();
  auto data = read_idx_dataset(dir / (prefix + "-images-idx3-ubyte.gz"), dir / (prefix + "-labels-idx1-ubyte.gz"));
  DISTILLERY_CHECK(data.labels.max().item<int64_t>() < 10, Error("Fashion-MNIST labels must be 0..9").file(dir.string()));
  return data;
}

at::Tensor to_model_range(const at::Tensor& images) { return images.to(torch::kFloat32) / 127.5f - 1.0f; }

}  // namespace distillery
