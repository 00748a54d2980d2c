// defines: LabeledImages, read_idx_dataset, load_fashion_mnist, fashion_mnist_dir, to_model_range
// Fashion-MNIST from Debian's `dataset-fashion-mnist` package: gzip-compressed IDX files
// (big-endian header: magic 0x00000803 for images, 0x00000801 for labels, then the sizes).
#pragma once

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <string>

namespace distillery {

struct LabeledImages {
  at::Tensor images;  // uint8 [N, 1, H, W]
  at::Tensor labels;  // int64 [N]
};

// Any IDX image/label pair (gzip or plain); errors name the file and what is wrong.
LabeledImages read_idx_dataset(const std::filesystem::path& images, const std::filesystem::path& labels);

// `split` is "train" (60,000) or "test" (10,000). The directory is $DISTILLERY_FASHION_MNIST_DIR
// or the Debian package's /usr/share/datasets/fashion-mnist.
LabeledImages load_fashion_mnist(const std::string& split);
std::filesystem::path fashion_mnist_dir();

// uint8 [0, 255] -> float32 [-1, 1], the range every model in the project works in.
at::Tensor to_model_range(const at::Tensor& images);

}  // namespace distillery
