// defines: UNetDenoiser, add_denoiser_fields
// A UNet wrapped by EDM preconditioning as a Denoiser, saved as one safetensors file whose
// metadata holds the configuration needed to rebuild it (format "distillery.denoiser" v1).
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "models/denoiser.h"
#include "models/precond.h"
#include "models/unet.h"

namespace distillery {

// model.* (UNet) and precond.* (sigma_data, sigma_min, sigma_max) keys.
void add_denoiser_fields(ConfigSchema& schema);

class UNetDenoiser final : public Denoiser {
 public:
  UNetDenoiser(const UNetConfig& config, double sigma_data, double sigma_min, double sigma_max);
  // Rebuilds and loads a file written by save(); errors name the file and the problem.
  static std::unique_ptr<UNetDenoiser> load(const std::filesystem::path& path);
  void save(const std::filesystem::path& path, const std::map<std::string, std::string>& extra_metadata = {}) const;

  at::Tensor denoise(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& labels) override;
  std::vector<int64_t> sample_shape() const override;
  int64_t num_classes() const override { return net_->config().num_classes; }
  double sigma_min() const override { return sigma_min_; }
  double sigma_max() const override { return sigma_max_; }
  double sigma_data() const { return sigma_data_; }
  std::string describe() const override;

  UNet& net() { return net_; }
  const UNet& net() const { return net_; }
  std::string config_json() const;

 private:
  UNet net_;
  PreconditionedDenoiser preconditioned_;  // EDM preconditioning around net_
  double sigma_data_, sigma_min_, sigma_max_;
};

}  // namespace distillery
