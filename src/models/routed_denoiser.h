// defines: RoutedDenoiser, load_denoiser_file
// Several class-conditional networks as one denoiser (multi-student distillation, Song et al.
// 2024): each class belongs to one network, and every row goes to the network of its label, so
// a sampler, `generate` and `eval` use them as one model. Saved as one safetensors file (format
// "distillery.routed_denoiser" v1): network k's tensors under "student.<k>.", and the metadata
// "router" = {"route": [the network of each class], "networks": [each one's config]}.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/denoiser.h"

namespace distillery {

class NetworkDenoiser;
struct TensorFile;

class RoutedDenoiser final : public Denoiser {
 public:
  // route[c]: the network of class c. The networks share their sample shape and class count
  // (route's length), and each one has at least one class.
  RoutedDenoiser(std::vector<std::unique_ptr<NetworkDenoiser>> networks, std::vector<int64_t> route);
  ~RoutedDenoiser() override;
  static std::unique_ptr<RoutedDenoiser> from_file(const TensorFile& file);
  static void save(const std::filesystem::path& path, const std::vector<const NetworkDenoiser*>& networks, const std::vector<int64_t>& route,
                   const std::map<std::string, std::string>& extra_metadata = {});

  at::Tensor denoise(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& labels) override;
  c10::Device device() const override;
  void to(const c10::Device& device) override;
  std::vector<int64_t> sample_shape() const override;
  int64_t num_classes() const override { return static_cast<int64_t>(route_.size()); }
  double sigma_min() const override;
  double sigma_max() const override;
  std::string describe() const override;

  const std::vector<int64_t>& route() const { return route_; }
  size_t size() const { return networks_.size(); }
  NetworkDenoiser& network(size_t k) { return *networks_.at(k); }

 private:
  std::vector<std::unique_ptr<NetworkDenoiser>> networks_;
  std::vector<int64_t> route_;
  at::Tensor route_on_device_;  // route_ where the networks are, for indexing by labels
};

// A denoiser file of either kind, chosen by its metadata's format: one network, or a routed set.
std::unique_ptr<Denoiser> load_denoiser_file(const std::filesystem::path& path);

}  // namespace distillery
