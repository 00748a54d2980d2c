// defines: InceptionV3Impl, InceptionV3, load_inception, inception_features
// Inception-v3 as pytorch-fid builds it for FID (the TensorFlow graph's variant): torchvision's
// Inception-v3 with FIDInceptionA/C blocks (average pooling that ignores padding),
// FIDInceptionE_1 (same) and FIDInceptionE_2 (max pooling), batch norm with ε = 1e-3, and the
// 2048-d output of the final average pool. Parameter names are pytorch-fid's InceptionV3
// state_dict names (`blocks.2.0.branch1x1.conv.weight`), so its weights load unchanged once
// converted to safetensors (tools/convert_inception.py).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <filesystem>

namespace distillery {

class InceptionV3Impl : public torch::nn::Module {
 public:
  InceptionV3Impl();
  // x: float [N, 3, 299, 299] in [−1, 1]; returns the pool3 features [N, 2048].
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::ModuleList blocks_{nullptr};
};
TORCH_MODULE(InceptionV3);

// Weights from a safetensors file with pytorch-fid's names, in eval mode.
InceptionV3 load_inception(const std::filesystem::path& path);

// pytorch-fid's preprocessing and network: uint8 [N, C, H, W] (C = 1 is replicated to RGB)
// → /255 → bilinear resize to 299×299 (align_corners false, no antialias) → 2x − 1 → pool3
// features, returned as float64 [N, 2048].
at::Tensor inception_features(InceptionV3& net, const at::Tensor& images_uint8);

}  // namespace distillery
