// defines: ImageBatch, ImageSource, open_image_source, image_source_forms
// Where evaluated images come from, read batch by batch (never all at once): a dataset
// (`dataset:fmnist-test`, `dataset:fmnist-train`), an image folder, a trajectory store (its
// final samples), a `distillery sample` safetensors file, or a model sampled on the fly
// (`model:TEACHER` with a sampler and step count). Generated values are quantised to uint8
// exactly as a saved PNG would be, so every source yields what a PNG of it would hold.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

#include "samplers/sampling.h"

namespace distillery {

struct ImageBatch {
  at::Tensor images;  // uint8 [n, C, H, W]
  at::Tensor labels;  // int64 [n], −1 where unknown
};

class ImageSource {
 public:
  virtual ~ImageSource() = default;
  virtual int64_t size() const = 0;
  // Fills the next batch of at most `max` images; false when exhausted.
  virtual bool next(int64_t max, ImageBatch& batch) = 0;
  virtual std::string describe() const = 0;
};

// `request` is used by `model:` sources (num, seed, sampler, steps, labels, guidance), which
// sample on `device`; every source's batches are on the CPU.
std::unique_ptr<ImageSource> open_image_source(const std::string& spec, const SampleRequest& request, const c10::Device& device);
std::string image_source_forms();

}  // namespace distillery
