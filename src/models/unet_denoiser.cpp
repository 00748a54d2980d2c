#include "models/unet_denoiser.h"

#include <fmt/format.h>
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/error.h"
#include "core/hash.h"
#include "io/tensor_file.h"
#include "models/precond.h"
#include "models/weights.h"

namespace distillery {

namespace {
const ConfigSchema& denoiser_schema() {
  static const ConfigSchema schema = [] {
    ConfigSchema s;
    add_denoiser_fields(s);
    return s;
  }();
  return schema;
}
constexpr const char* kFormat = "distillery.denoiser";
}  // namespace

void add_denoiser_fields(ConfigSchema& schema) {
  add_unet_fields(schema, "model.");
  schema.add({"precond.sigma_data", ConfigType::Float, "standard deviation of the data", "0.5"});
  schema.add({"precond.sigma_min", ConfigType::Float, "smallest σ samplers use", "0.002"});
  schema.add({"precond.sigma_max", ConfigType::Float, "largest σ samplers start from", "80"});
}

UNetDenoiser::UNetDenoiser(const UNetConfig& config, double sigma_data, double sigma_min, double sigma_max)
    : net_(config),
      preconditioned_(Parameterization::EDM,
                      [net = net_](const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels) mutable {
                        return net->forward(x_in, c_noise, labels);
                      },
                      {.sigma_data = sigma_data}),
      sigma_data_(sigma_data), sigma_min_(sigma_min), sigma_max_(sigma_max) {}

std::vector<int64_t> UNetDenoiser::sample_shape() const {
  const auto& c = net_->config();
  return {c.in_channels, c.resolution, c.resolution};
}

at::Tensor UNetDenoiser::denoise(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& labels) {
  return preconditioned_.denoise(x, sigma.to(torch::kFloat32), labels);
}

std::string UNetDenoiser::config_json() const {
  const auto& c = net_->config();
  nlohmann::json j;
  j["model"] = {{"in_channels", c.in_channels},       {"out_channels", c.out_channels},
                {"resolution", c.resolution},         {"model_channels", c.model_channels},
                {"channel_mult", c.channel_mult},     {"blocks_per_level", c.blocks_per_level},
                {"attn_resolutions", c.attn_resolutions}, {"channels_per_head", c.channels_per_head},
                {"dropout", c.dropout},               {"num_classes", c.num_classes},
                {"label_dropout", c.label_dropout},   {"noise_embedding", c.noise_embedding}};
  j["precond"] = {{"sigma_data", sigma_data_}, {"sigma_min", sigma_min_}, {"sigma_max", sigma_max_}};
  return j.dump();
}

std::string UNetDenoiser::describe() const { return fmt::format("edm-unet {}", config_json()); }

void UNetDenoiser::save(const std::filesystem::path& path, const std::map<std::string, std::string>& extra_metadata) const {
  auto metadata = extra_metadata;
  metadata["format"] = kFormat;
  metadata["format_version"] = "1";
  metadata["config"] = config_json();
  save_tensor_file(path, module_tensors(*net_), metadata);
}

std::unique_ptr<UNetDenoiser> UNetDenoiser::load(const std::filesystem::path& path) {
  const auto file = load_tensor_file(path);
  const auto format = file.metadata.find("format");
  DISTILLERY_CHECK(format != file.metadata.end() && format->second == kFormat,
                   Error("not a distillery denoiser file").file(path.string()).expected(std::string("metadata format = ") + kFormat)
                       .got(format == file.metadata.end() ? "no format in the metadata" : format->second));
  DISTILLERY_CHECK(file.metadata.count("format_version") && file.metadata.at("format_version") == "1",
                   Error("unsupported denoiser format version").file(path.string()).expected("1"));
  DISTILLERY_CHECK(file.metadata.count("config"), Error("denoiser file has no config in its metadata").file(path.string()));
  // The stored config is JSON, which YAML reads as it is, so the same schema validates it.
  const auto config = Config::parse(denoiser_schema(), file.metadata.at("config"), path.string() + " (metadata config)");
  auto denoiser = std::make_unique<UNetDenoiser>(unet_config_from(config, "model."), config.get_float("precond.sigma_data"),
                                                 config.get_float("precond.sigma_min"), config.get_float("precond.sigma_max"));
  load_module_tensors(*denoiser->net_, file.tensors, path.string());
  denoiser->net_->eval();
  return denoiser;
}

}  // namespace distillery
