#include "data/fashion_mnist.h"

#include <fmt/format.h>
#include <torch/types.h>
#include <zlib.h>

#include <cstdlib>
#include <vector>

#include "core/error.h"
#include "io/idx.h"

namespace distillery {

namespace {
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
  // zlib gives nothing, without an error, for gzip data it cannot inflate.
  DISTILLERY_CHECK(!bytes.empty() || std::filesystem::file_size(path) == 0,
                   Error("dataset file is corrupt: it holds no readable data").file(path.string()).expected("an IDX file, plain or gzip-compressed"));
  return bytes;
}

}  // namespace

LabeledImages read_idx_dataset(const std::filesystem::path& images_path, const std::filesystem::path& labels_path) {
  const auto image_bytes = read_maybe_gzip(images_path);
  const auto label_bytes = read_maybe_gzip(labels_path);
  const auto as_view = [](const std::vector<uint8_t>& bytes) { return std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()); };
  const auto images = parse_idx(as_view(image_bytes), kIdxUint8Images, images_path.string());
  const auto labels = parse_idx(as_view(label_bytes), kIdxUint8Labels, labels_path.string());
  DISTILLERY_CHECK(images.dims[0] == labels.dims[0], Error("image and label counts differ")
                                                         .file(labels_path.string())
                                                         .expected(fmt::format("{} labels (as in {})", images.dims[0], images_path.string()))
                                                         .got(std::to_string(labels.dims[0])));
  LabeledImages out;
  const auto image_data = const_cast<uint8_t*>(image_bytes.data()) + images.data_offset;
  out.images = torch::from_blob(image_data, {images.dims[0], 1, images.dims[1], images.dims[2]}, torch::kUInt8).clone();
  const auto label_data = const_cast<uint8_t*>(label_bytes.data()) + labels.data_offset;
  out.labels = torch::from_blob(label_data, {labels.dims[0]}, torch::kUInt8).to(torch::kInt64);
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
  const auto images = dir / (prefix + "-images-idx3-ubyte.gz"), labels = dir / (prefix + "-labels-idx1-ubyte.gz");
  auto data = read_idx_dataset(images, labels);
  DISTILLERY_CHECK(data.images.size(2) == 28 && data.images.size(3) == 28, Error("Fashion-MNIST images must be 28×28").file(images.string())
                                                                              .got(fmt::format("{}×{}", data.images.size(3), data.images.size(2))));
  DISTILLERY_CHECK(data.labels.numel() == 0 || data.labels.max().item<int64_t>() < 10,
                   Error("Fashion-MNIST labels must be 0..9").file(labels.string()).got(std::to_string(data.labels.max().item<int64_t>())));
  return data;
}

at::Tensor to_model_range(const at::Tensor& images) { return images.to(torch::kFloat32) / 127.5f - 1.0f; }

}  // namespace distillery
