// defines: TorchScriptDenoiser
// A denoiser from a TorchScript file with the documented interface:
//   forward(x: Tensor[N, *shape], sigma: Tensor[N], labels: Tensor[N] int64, −1 = none) -> Tensor like x
// plus attributes sample_shape (List[int]), num_classes (int), sigma_min, sigma_max (float).
// tools/export_teacher.py writes such files. TorchScript deserialisation is not memory-safe on
// hostile input: load trusted files only; safetensors is the default format.
#pragma once

#include <filesystem>
#include <memory>

#include "models/denoiser.h"

namespace distillery {

class TorchScriptDenoiser final : public Denoiser {
 public:
  explicit TorchScriptDenoiser(const std::filesystem::path& path);
  ~TorchScriptDenoiser() override;

  at::Tensor denoise(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& labels) override;
  c10::Device device() const override { return device_; }
  void to(const c10::Device& device) override;
  std::vector<int64_t> sample_shape() const override { return sample_shape_; }
  int64_t num_classes() const override { return num_classes_; }
  double sigma_min() const override { return sigma_min_; }
  double sigma_max() const override { return sigma_max_; }
  std::string describe() const override { return description_; }

 private:
  struct Module;
  std::unique_ptr<Module> module_;
  std::vector<int64_t> sample_shape_;
  int64_t num_classes_ = 0;
  double sigma_min_ = 0.002, sigma_max_ = 80.0;
  std::string description_;
  c10::Device device_ = c10::Device(c10::DeviceType::CPU);
};

}  // namespace distillery
