#include "data/cifar10.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include <cstring>
#include <fstream>
#include <iterator>

#include "core/error.h"
#include "io/pickle.h"

namespace distillery {

namespace {
constexpr int64_t kSide = 32, kPixels = 3 * kSide * kSide, kClasses = 10;
// A batch is 30 MB; a file far beyond that is not one.
constexpr uintmax_t kMaxBatchBytes = uintmax_t{1} << 30;
}  // namespace

LabeledImages read_cifar10_batch(const std::filesystem::path& file) {
  const auto where = file.string();
  DISTILLERY_CHECK(std::filesystem::is_regular_file(file), Error("CIFAR-10 batch not found").file(where)
                                                               .hint("name the directory extracted from cifar-10-python.tar.gz, cifar-10-batches-py"));
  DISTILLERY_CHECK(std::filesystem::file_size(file) <= kMaxBatchBytes, Error("too large for a CIFAR-10 batch").file(where).expected("about 30 MB"));
  std::ifstream in(file, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto batch = parse_pickle(bytes, where);
  const auto bad = [&](const std::string& what) {
    return Error(fmt::format("not a CIFAR-10 batch: {}", what)).file(where).expected("a dict with 'data' (uint8 [N, 3072]) and 'labels' (N classes 0-9)");
  };
  const auto* data = batch.find("data");
  const auto* labels = batch.find("labels");
  DISTILLERY_CHECK(data && labels, bad("no 'data' or no 'labels'"));
  const auto* array = std::get_if<PickleArray>(&data->value);
  DISTILLERY_CHECK(array && (array->dtype == "u1" || array->dtype == "|u1") && array->shape.size() == 2 && array->shape[1] == kPixels,
                   bad(array ? fmt::format("'data' has type {} and shape [{}]", array->dtype, fmt::join(array->shape, ", ")) : "'data' is not an array"));
  const auto* label_list = std::get_if<PickleList>(&labels->value);
  DISTILLERY_CHECK(label_list && static_cast<int64_t>(label_list->size()) == array->shape[0],
                   bad(fmt::format("'labels' is not a list of {} classes", array->shape[0])));
  std::vector<int64_t> values;
  for (const auto& label : *label_list) {
    const auto* value = std::get_if<int64_t>(&label->value);
    DISTILLERY_CHECK(value && *value >= 0 && *value < kClasses, bad("a label is not a class 0-9"));
    values.push_back(*value);
  }
  const int64_t n = array->shape[0];
  auto images = torch::empty({n, 3, kSide, kSide}, torch::kUInt8);
  std::memcpy(images.data_ptr(), array->data.data(), array->data.size());
  return {images, torch::tensor(values, torch::kInt64)};
}

LabeledImages load_cifar10(const std::filesystem::path& dir, const std::string& split) {
  DISTILLERY_CHECK(split == "train" || split == "test", Error(fmt::format("unknown CIFAR-10 split '{}'", split)).expected("train or test"));
  DISTILLERY_CHECK(std::filesystem::is_directory(dir), Error("CIFAR-10 directory not found").file(dir.string())
                                                           .hint("extract cifar-10-python.tar.gz and name its cifar-10-batches-py directory"));
  if (split == "test") return read_cifar10_batch(dir / "test_batch");
  std::vector<at::Tensor> images, labels;
  for (int i = 1; i <= 5; ++i) {
    auto batch = read_cifar10_batch(dir / fmt::format("data_batch_{}", i));
    images.push_back(batch.images);
    labels.push_back(batch.labels);
  }
  return {torch::cat(images), torch::cat(labels)};
}

}  // namespace distillery
