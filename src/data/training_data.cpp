#include "data/training_data.h"

#include <fmt/format.h>

#include "core/config.h"
#include "core/error.h"
#include "data/cifar10.h"
#include "data/fashion_mnist.h"
#include "data/image_folder.h"
#include "data/gaussian_mixture_spec.h"

namespace distillery {

void add_training_data_fields(ConfigSchema& s) {
  s.add({"data.dataset", ConfigType::String,
         "training data: Fashion-MNIST, a folder of PNG/JPEG (labels from its dataset.json), an ImageNet-style folder of class subfolders, "
         "CIFAR-10's python batches, or draws from a Gaussian-mixture spec",
         "fmnist", false, {"fmnist", "folder", "class_folders", "cifar10", "gmm"}});
  s.add({"data.path", ConfigType::String, "the image folder, the cifar-10-batches-py directory, or the mixture's YAML spec", "\"\""});
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
                                                                                              : "the image folder"));
  if (dataset == "gmm") {
    const int64_t size = config.get_int("data.size");
    auto [x0, components] = GaussianMixtureSpec::load(path).draw(size, static_cast<uint64_t>(config.get_int("train.seed")));
    return {x0, components};
  }
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
