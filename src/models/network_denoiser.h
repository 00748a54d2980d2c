// defines: NetworkDenoiser, PrecondSettings, add_network_fields
// A trainable network (the UNet for images, the MLP for low-dimensional data, or one of the
// published networks: EDM's DDPM++/NCSN++ as song_unet and ADM as dhariwal_unet, EDM2's UNet as
// edm2_unet, DiT as dit) wrapped by the preconditioning of its parameterisation
// (precond.parameterization: EDM by default, rectified flow, the consistency boundary
// condition, TrigFlow, VP, VE, discrete DDPM) as a Denoiser, saved as
// one safetensors file whose metadata holds the configuration needed to rebuild it (format
// "distillery.denoiser" v1; model.kind defaults to unet and precond.parameterization to edm, so
// files written before either existed still load).
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "models/denoiser.h"
#include "models/feature_taps.h"
#include "models/mlp.h"
#include "models/precond.h"
#include "models/unet.h"

namespace distillery {

class Config;
struct TensorFile;
struct SongUNetConfig;
struct DhariwalUNetConfig;
struct Edm2UNetConfig;
struct DitConfig;

// model.kind, the keys every network shares, each network's own keys, and precond.*. Setting
// a key of the other kind (model.channel_mult with model.kind: mlp) is an error.
void add_network_fields(ConfigSchema& schema);

// What a copy of a network changes (clone()).
struct NetworkChanges {
  std::optional<Parameterization> parameterization;  // the same network F under another preconditioning
  bool target_time = false;                           // add a target-time input (zero-initialised)
};

struct PrecondSettings {
  Parameterization parameterization = Parameterization::EDM;
  double sigma_data = 0.5;
  double sigma_min = 0.002;  // the σ range samplers use
  double sigma_max = 80.0;
};

class NetworkDenoiser final : public Denoiser {
 public:
  explicit NetworkDenoiser(const UNetConfig& config, PrecondSettings precond = {});
  explicit NetworkDenoiser(const MLPConfig& config, PrecondSettings precond = {});
  explicit NetworkDenoiser(const SongUNetConfig& config, PrecondSettings precond = {});
  explicit NetworkDenoiser(const DhariwalUNetConfig& config, PrecondSettings precond = {});
  explicit NetworkDenoiser(const Edm2UNetConfig& config, PrecondSettings precond = {});
  explicit NetworkDenoiser(const DitConfig& config, PrecondSettings precond = {});
  // From model.* and precond.* of a config declared with add_network_fields.
  static std::unique_ptr<NetworkDenoiser> from_config(const Config& config);
  // Rebuilds and loads a file written by save(); errors name the file and the problem.
  static std::unique_ptr<NetworkDenoiser> load(const std::filesystem::path& path);
  static std::unique_ptr<NetworkDenoiser> from_file(const TensorFile& file);
  void save(const std::filesystem::path& path, const std::map<std::string, std::string>& extra_metadata = {}) const;
  // A copy with the same architecture, weights and device (independent parameters, eval mode),
  // with `changes`: a consistency student starts from an EDM teacher's network under the
  // consistency preconditioning (Song et al. 2023), a trajectory model from it with a target-time
  // input added (Kim et al. 2024).
  std::unique_ptr<NetworkDenoiser> clone(const NetworkChanges& changes = {}) const;
  // The metadata save() writes (format, version, config), for files written elsewhere (checkpoints).
  std::map<std::string, std::string> file_metadata(const std::map<std::string, std::string>& extra = {}) const;
  // Builds the network `config_json` (config_json()'s form) declares and loads `tensors` into
  // it, refusing a declared size far beyond the tensors' before building; errors name `source`.
  static std::unique_ptr<NetworkDenoiser> from_tensors(const std::string& config_json, const std::map<std::string, at::Tensor>& tensors,
                                                       const std::string& source);
  // Takes `other`'s weights, which must be of the same architecture and preconditioning.
  void copy_weights_from(const NetworkDenoiser& other);

  at::Tensor denoise(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& labels) override;
  // With a target-time input: the network fed the target σ; without: D(x; σ).
  at::Tensor denoise_toward(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& sigma_target, const at::Tensor& labels) override;
  bool has_target_time() const { return target_time_; }
  c10::Device device() const override { return preconditioned_.device(); }
  void to(const c10::Device& device) override;
  std::vector<int64_t> sample_shape() const override { return sample_shape_; }
  int64_t num_classes() const override { return num_classes_; }
  double sigma_min() const override { return precond_.sigma_min; }
  double sigma_max() const override { return precond_.sigma_max; }
  double sigma_data() const { return precond_.sigma_data; }
  std::string describe() const override;

  // The places inside the network whose features can be read (the UNet's and the MLP's
  // feature_taps(), in network order).
  const std::vector<FeatureTap>& feature_taps() const { return taps_; }
  // The tap called `name`; an unknown name is an error listing the taps there are.
  const FeatureTap& feature_tap(const std::string& name) const;
  // The features of x at σ at the named taps, from one pass that goes only as deep as the
  // deepest of them (names checked by feature_tap).
  FeatureMap features(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& labels, const std::vector<std::string>& taps);

  // The trainable module (parameters, buffers, train/eval mode).
  torch::nn::Module& module() { return *module_; }
  const torch::nn::Module& module() const { return *module_; }
  // The same module, for containers that hold it beside other modules.
  const std::shared_ptr<torch::nn::Module>& shared_module() const { return module_; }
  // {"model": {"kind": ..., ...}, "precond": {...}}, as stored in the file's metadata.
  std::string config_json() const;

 private:
  // The network's pass with a visitor of its taps, given c_in·x, c_noise and the target's c_noise.
  using RawFeatures = std::function<void(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const at::Tensor& c_noise_target,
                                         const FeatureVisitor& visit)>;
  struct Parts {
    std::shared_ptr<torch::nn::Module> module;
    RawNetwork forward;
    RawFeatures features;
    std::vector<FeatureTap> taps;
    std::string model_json;
    std::vector<int64_t> sample_shape;
    int64_t num_classes;
    bool target_time;
  };
  static Parts parts_of(const UNetConfig& config);
  static Parts parts_of(const MLPConfig& config);
  static Parts parts_of(const SongUNetConfig& config);
  static Parts parts_of(const DhariwalUNetConfig& config);
  static Parts parts_of(const Edm2UNetConfig& config);
  static Parts parts_of(const DitConfig& config);
  template <typename Network>
  static Parts edm_network_parts(Network net, std::string model_json, std::vector<int64_t> sample_shape, int64_t num_classes);
  NetworkDenoiser(Parts parts, PrecondSettings precond);

  std::shared_ptr<torch::nn::Module> module_;
  RawFeatures raw_features_;
  std::vector<FeatureTap> taps_;
  std::string model_json_;
  std::vector<int64_t> sample_shape_;
  int64_t num_classes_;
  bool target_time_;
  PrecondSettings precond_;
  PreconditionedDenoiser preconditioned_;  // EDM preconditioning around module_
};

}  // namespace distillery
