#include "data/training_data.h"

#include <fmt/format.h>
#include <torch/types.h>

#include "core/config.h"
#include "core/error.h"
#include "core/tensor_checks.h"
#include "data/cifar10.h"
#include "data/fashion_mnist.h"
#include "data/image_folder.h"
#include "data/gaussian_mixture_spec.h"
#include "io/tensor_file.h"

namespace distillery {

namespace {

// `samples` [N, *model_shape] float32 or float64, finite, and `labels` [N] int64 if present, as
// `distillery sample` writes them; taken as they are, with no conversion to a range.
TrainingData load_samples(const std::string& path, const std::vector<int64_t>& model_shape) {
  const auto file = load_tensor_file(path);
  const auto& samples = file.get("samples");
  std::vector<int64_t> shape = {kAnySize};
  shape.insert(shape.end(), model_shape.begin(), model_shape.end());
  check_shape(samples, shape, fmt::format("'samples' in {} (the model's sample shape, after the count)", path));
  DISTILLERY_CHECK(samples.size(0) > 0 && samples.is_floating_point(),
                   Error("'samples' must hold at least one floating-point sample").file(path).got(fmt::format("{} of {}", samples.size(0), samples.dtype().name())));
  DISTILLERY_CHECK(torch::isfinite(samples).all().item<bool>(), Error("'samples' holds non-finite values").file(path).expected("finite samples"));
  at::Tensor labels;
  if (file.tensors.count("labels")) {
    labels = file.get("labels");
    check_dtype(labels, torch::kInt64, fmt::format("'labels' in {}", path));
    check_shape(labels, {samples.size(0)}, fmt::format("'labels' in {} (one per sample)", path));
  } else {
    labels = torch::full({samples.size(0)}, -1, samples.options().dtype(torch::kInt64));
  }
  return {samples.to(torch::kFloat32), labels};
}

}  // namespace

void add_training_data_fields(ConfigSchema& s) {
  s.add({"data.dataset", ConfigType::String,
         "training data: Fashion-MNIST, a folder of PNG/JPEG (labels from its dataset.json), an ImageNet-style folder of class subfolders, "
         "CIFAR-10's python batches, draws from a Gaussian-mixture spec, or a safetensors file of samples already in the model's range "
         "(latents encoded elsewhere, or what `distillery sample` wrote)",
         "fmnist", false, {"fmnist", "folder", "class_folders", "cifar10", "gmm", "samples"}});
  s.add({"data.path", ConfigType::String, "the image folder, the cifar-10-batches-py directory, the mixture's YAML spec, or the samples file", "\"\""});
  s.add({"data.split", ConfigType::String, "fmnist and cifar10: the split to learn from", "train", false, {"train", "test"}});
  s.add({"data.size", ConfigType::Int, "gmm: number of draws that make up the training set (labels: their components)", "65536"}, NumberRange::between(1, 1 << 30));
  s.add({"data.hflip", ConfigType::Bool, "random horizontal flips (images only)", "false"});
}

TrainingData load_training_data(const Config& config, const std::vector<int64_t>& model_shape) {
  const auto dataset = config.get_string("data.dataset");
  const auto path = config.get_string("data.path");
  DISTILLERY_CHECK(dataset == "fmnist" || !path.empty(), Error(fmt::format("data.dataset {} needs data.path", dataset)).file(config.source()).field("data.path")
                                                             .expected(dataset == "gmm"       ? "the mixture's YAML spec"
                                                                       : dataset == "cifar10" ? "the cifar-10-batches-py directory"
                                                                       : dataset == "samples" ? "the safetensors file of samples"
                                                                                              : "the image folder"));
  if (dataset == "gmm") {
    const int64_t size = config.get_int("data.size");
    auto [x0, components] = GaussianMixtureSpec::load(path).draw(size, static_cast<uint64_t>(config.get_int("train.seed")));
    return {x0, components};
  }
  if (dataset == "samples") return load_samples(path, model_shape);
  const auto split = config.get_string("data.split");
  DISTILLERY_CHECK(split == "train" || dataset == "fmnist" || dataset == "cifar10", Error(fmt::format("data.dataset {} has no splits", dataset))
                                                                                       .file(config.source()).field("data.split")
                                                                                       .hint("name the split's own folder in data.path"));
  const auto images = dataset == "folder"          ? read_image_folder(path)
                      : dataset == "class_folders" ? read_class_folders(path)
                      : dataset == "cifar10"       ? load_cifar10(path, split)
                                                   : load_fashion_mnist(split);
  const int64_t channels = images.images.size(1);
  DISTILLERY_CHECK(model_shape.size() != 3 || model_shape[0] == channels,
                   Error(fmt::format("the images have {} channel{}, the model takes {}", channels, channels == 1 ? "" : "s", model_shape[0]))
                       .file(dataset == "fmnist" ? "Fashion-MNIST" : path).field("data.path")
                       .hint(fmt::format("images are never converted: give {} images, or a model of {} channels (model.in_channels, model.out_channels)",
                                         model_shape[0] == 1 ? "grey" : "colour", channels)));
  return {to_model_range(images.images), images.labels};
}

}  // namespace distillery
