#include "eval/image_source.h"

#include <fmt/format.h>
#include <torch/types.h>

#include <numeric>

#include "core/error.h"
#include "core/tensor_checks.h"
#include "data/fashion_mnist.h"
#include "data/cifar10.h"
#include "data/image_folder.h"
#include "io/image.h"
#include "io/tensor_file.h"
#include "teachers/teacher.h"
#include "trajectories/trajectory_reader.h"

namespace distillery {

namespace {

at::Tensor unknown_labels(int64_t n) { return torch::full({n}, -1, torch::kInt64); }

// Samples are images in [-1, 1]: integers would be taken as pixel values far outside that
// range, and NaN or Inf would become some pixel value after quantisation, either way giving a
// number for the wrong images.
at::Tensor checked_samples(const at::Tensor& samples, const std::string& file) {
  DISTILLERY_CHECK(samples.dim() == 4, Error("'samples' are not images").file(file).expected("[N, C, H, W]").got(shape_string(samples.sizes().vec())));
  DISTILLERY_CHECK(samples.is_floating_point(), Error("'samples' must be floating-point images in [-1, 1]").file(file)
                                                    .got(std::string(c10::toString(samples.scalar_type()))));
  const auto nonfinite = torch::logical_not(torch::isfinite(samples)).sum().item<int64_t>();
  DISTILLERY_CHECK(nonfinite == 0, Error("'samples' hold non-finite values").file(file).expected("finite images in [-1, 1]")
                                       .got(fmt::format("{} NaN or Inf values", nonfinite)));
  return samples;
}

// Labels are class indices, −1 for "no label", one per sample.
at::Tensor checked_labels(const at::Tensor& labels, int64_t count, const std::string& file) {
  const bool integral = !labels.is_floating_point() && !labels.is_complex() && labels.scalar_type() != torch::kBool;
  DISTILLERY_CHECK(integral && labels.dim() == 1 && labels.size(0) == count,
                   Error("'labels' must be one integer class per sample").file(file)
                       .expected(fmt::format("[{}] integers (−1: no label)", count))
                       .got(fmt::format("{} {}", shape_string(labels.sizes().vec()), c10::toString(labels.scalar_type()))));
  const auto as_int64 = labels.to(torch::kInt64);
  DISTILLERY_CHECK(count == 0 || as_int64.min().item<int64_t>() >= -1,
                   Error("'labels' hold a negative class").file(file).expected("classes ≥ 0, or −1 for no label").got(std::to_string(as_int64.min().item<int64_t>())));
  return as_int64;
}

// Images already in memory (datasets, folders, sample files).
class TensorSource final : public ImageSource {
 public:
  TensorSource(at::Tensor images, at::Tensor labels, std::string description)
      : images_(std::move(images)), labels_(std::move(labels)), description_(std::move(description)) {}
  int64_t size() const override { return images_.size(0); }
  bool next(int64_t max, ImageBatch& batch) override {
    if (position_ >= size()) return false;
    const int64_t end = std::min(position_ + max, size());
    batch = {images_.slice(0, position_, end), labels_.slice(0, position_, end)};
    position_ = end;
    return true;
  }
  std::string describe() const override { return description_; }

 private:
  at::Tensor images_, labels_;
  std::string description_;
  int64_t position_ = 0;
};

class StoreSource final : public ImageSource {
 public:
  explicit StoreSource(const std::string& dir) : reader_(dir), dir_(dir) {}
  int64_t size() const override { return reader_.size(); }
  bool next(int64_t max, ImageBatch& batch) override {
    if (position_ >= size()) return false;
    std::vector<int64_t> indices(static_cast<size_t>(std::min(max, size() - position_)));
    std::iota(indices.begin(), indices.end(), position_);
    position_ += static_cast<int64_t>(indices.size());
    const auto pairs = reader_.pairs(indices);
    batch = {quantize_to_uint8(pairs.sample), pairs.labels};
    return true;
  }
  std::string describe() const override { return fmt::format("trajectory store {} (final samples of {})", dir_, reader_.settings().teacher); }

 private:
  TrajectoryReader reader_;
  std::string dir_;
  int64_t position_ = 0;
};

class ModelSource final : public ImageSource {
 public:
  ModelSource(const std::string& teacher, const SampleRequest& request, const c10::Device& device)
      : teacher_spec_(teacher), model_(load_teacher(teacher, device)), request_(request), sampler_(*model_, request) {}
  int64_t size() const override { return request_.num; }
  bool next(int64_t max, ImageBatch& batch) override {
    if (position_ >= size()) return false;
    std::vector<int64_t> indices(static_cast<size_t>(std::min({max, request_.batch, size() - position_})));
    std::iota(indices.begin(), indices.end(), request_.first_index + position_);
    position_ += static_cast<int64_t>(indices.size());
    const auto drawn = sampler_.run(indices);
    batch = {quantize_to_uint8(drawn.samples).cpu(), drawn.labels.defined() ? drawn.labels.cpu() : unknown_labels(static_cast<int64_t>(indices.size()))};
    return true;
  }
  std::string describe() const override {
    return fmt::format("{} sampled with {} {} steps ({} NFE), seed {}, labels '{}', guidance {}", teacher_spec_, request_.sampler, request_.steps,
                       sampler_.nfe(), request_.seed, request_.labels, request_.guidance);
  }

 private:
  std::string teacher_spec_;
  std::unique_ptr<Denoiser> model_;
  SampleRequest request_;
  BatchSampler sampler_;
  int64_t position_ = 0;
};

}  // namespace

std::string image_source_forms() {
  return "dataset:fmnist-test, dataset:fmnist-train, dataset:cifar10-test:DIR, dataset:cifar10-train:DIR (cifar-10-batches-py), an image folder, "
         "classes:DIR (an ImageNet-style folder of class subfolders), a trajectory store directory, a `distillery sample` .safetensors file, "
         "or model:TEACHER (sampled with --sampler/--steps/--num/--seed)";
}

std::unique_ptr<ImageSource> open_image_source(const std::string& spec, const SampleRequest& request, const c10::Device& device) {
  if (spec == "dataset:fmnist-test" || spec == "dataset:fmnist-train") {
    const auto split = spec.substr(spec.find('-') + 1);
    auto data = load_fashion_mnist(split);
    return std::make_unique<TensorSource>(data.images, data.labels, "Fashion-MNIST " + split + " set");
  }
  for (const std::string split : {"train", "test"}) {
    const auto prefix = "dataset:cifar10-" + split + ":";
    if (spec.starts_with(prefix)) {
      auto data = load_cifar10(spec.substr(prefix.size()), split);
      return std::make_unique<TensorSource>(data.images, data.labels, "CIFAR-10 " + split + " set");
    }
  }
  if (spec.starts_with("classes:")) {
    auto data = read_class_folders(spec.substr(8));
    return std::make_unique<TensorSource>(data.images, data.labels, "class folders " + spec.substr(8));
  }
  if (spec.starts_with("model:")) return std::make_unique<ModelSource>(spec.substr(6), request, device);
  DISTILLERY_CHECK(!spec.starts_with("dataset:"), Error(fmt::format("unknown dataset '{}'", spec))
                                                      .expected("dataset:fmnist-test, dataset:fmnist-train, dataset:cifar10-test:DIR or dataset:cifar10-train:DIR"));
  DISTILLERY_CHECK(std::filesystem::exists(spec), Error("image source not found").file(spec).expected(image_source_forms()));
  if (std::filesystem::is_directory(spec)) {
    // A store is known by its settings, or, when they are gone, by its manifest: the reader
    // then names what is missing rather than the folder being taken for one of images.
    const std::filesystem::path dir(spec);
    if (std::filesystem::exists(dir / "store.json") || std::filesystem::exists(dir / "manifest.jsonl")) return std::make_unique<StoreSource>(spec);
    auto data = read_image_folder(spec);
    return std::make_unique<TensorSource>(data.images, data.labels, "image folder " + spec);
  }
  if (spec.ends_with(".safetensors")) {
    const auto file = load_tensor_file(spec);
    DISTILLERY_CHECK(file.tensors.count("samples"), Error("the file holds no 'samples' tensor").file(spec).hint("write one with `distillery sample --out FILE.safetensors`"));
    const auto samples = checked_samples(file.get("samples"), spec);
    const auto labels = file.tensors.count("labels") ? checked_labels(file.get("labels"), samples.size(0), spec) : unknown_labels(samples.size(0));
    return std::make_unique<TensorSource>(quantize_to_uint8(samples), labels, "samples file " + spec);
  }
  throw Error("unrecognised image source").file(spec).expected(image_source_forms());
}

}  // namespace distillery
