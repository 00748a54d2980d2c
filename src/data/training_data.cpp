#include "data/training_data.h"

#include <fmt/format.h>

#include "core/config.h"
#include "core/error.h"
#include "data/fashion_mnist.h"
#include "data/image_folder.h"
#include "data/gaussian_mixture_spec.h"

namespace distillery {

void add_training_data_fields(ConfigSchema& s) {
  s.add({"data.dataset", ConfigType::String,
         "training data: Fashion-MNIST, a folder of PNG/JPEG (data.path), or draws from a Gaussian-mixture spec (data.path)", "fmnist", false,
         {"fmnist", "folder", "gmm"}});
  s.add({"data.path", ConfigType::String, "the image folder (labels from its dataset.json) or the mixture's YAML spec", "\"\""});
  s.add({"data.size", ConfigType::Int, "gmm: number of draws that make up the training set (labels: their components)", "65536"}, NumberRange::between(1, 1 << 30));
  s.add({"data.hflip", ConfigType::Bool, "random horizontal flips (images only)", "false"});
}

TrainingData load_training_data(const Config& config, const std::vector<int64_t>& model_shape) {
  const auto dataset = config.get_string("data.dataset");
  const auto path = config.get_string("data.path");
  DISTILLERY_CHECK(dataset == "fmnist" || !path.empty(), Error(fmt::format("data.dataset {} needs data.path", dataset)).file(config.source()).field("data.path")
                                                             .expected(dataset == "gmm" ? "the mixture's YAML spec" : "the image folder"));
  if (dataset == "gmm") {
    const int64_t size = config.get_int("data.size");
    auto [x0, components] = GaussianMixtureSpec::load(path).draw(size, static_cast<uint64_t>(config.get_int("train.seed")));
    return {x0, components};
  }
  const auto images = dataset == "folder" ? read_image_folder(path) : load_fashion_mnist("train");
  const int64_t channels = images.images.size(1);
  DISTILLERY_CHECK(model_shape.size() != 3 || model_shape[0] == channels,
                   Error(fmt::format("the images have {} channel{}, the model takes {}", channels, channels == 1 ? "" : "s", model_shape[0]))
                       .file(dataset == "folder" ? path : "Fashion-MNIST").field("data.path")
                       .hint(fmt::format("images are never converted: give {} images, or a model of {} channels (model.in_channels, model.out_channels)",
                                         model_shape[0] == 1 ? "grey" : "colour", channels)));
  return {to_model_range(images.images), images.labels};
}

}  // namespace distillery
