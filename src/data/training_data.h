// defines: TrainingData, add_training_data_fields, load_training_data
// The real examples a trainer learns from (data.* keys): a split of Fashion-MNIST or CIFAR-10
// (its python batches), a folder of images with optional dataset.json labels, an ImageNet-style
// folder of class subfolders, exact draws from a Gaussian-mixture spec, or a safetensors file of
// samples already in the model's range (latents of a VAE that distillery does not include).
// Teachers learn to denoise them; DMD2's GAN head tells them from generated samples.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace distillery {

class Config;
class ConfigSchema;

// The examples in the model's range, float32 [N, *shape], with labels int64 [N] (−1: none).
struct TrainingData {
  at::Tensor x0, labels;
};

void add_training_data_fields(ConfigSchema& schema);

// An image model's `model_shape` [C, H, W] must have the images' channel count (grey 1,
// colour 3; they are never converted); draws from a mixture use train.seed. Errors name the
// key and the file.
TrainingData load_training_data(const Config& config, const std::vector<int64_t>& model_shape);

}  // namespace distillery
