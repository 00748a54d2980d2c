#include "models/network_denoiser.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "core/allocation_budget.h"
#include "core/config.h"
#include "core/error.h"
#include "io/tensor_file.h"
#include "models/dhariwal_unet.h"
#include "models/dit.h"
#include "models/edm2_unet.h"
#include "models/song_unet.h"
#include "models/weights.h"

namespace distillery {

namespace {

const ConfigSchema& denoiser_schema() {
  static const ConfigSchema schema = [] {
    ConfigSchema s;
    add_network_fields(s);
    return s;
  }();
  return schema;
}

constexpr const char* kFormat = "distillery.denoiser";

std::string megabytes(size_t bytes) { return fmt::format("{:.{}f} MB", bytes / 1e6, bytes < 100'000 ? 3 : 1); }

// The keys `add_fields` declares (under "model.").
std::set<std::string> declared_keys(void (*add_fields)(ConfigSchema&, const std::string&)) {
  ConfigSchema s;
  add_fields(s, "model.");
  std::set<std::string> keys;
  for (const auto& field : s.fields()) keys.insert(field.key);
  return keys;
}

// The kind-specific keys model.kind `kind` reads; the keys every network shares are not among them.
std::set<std::string> keys_read_by(const std::string& kind) {
  if (kind == "unet") return declared_keys(add_unet_fields);
  if (kind == "mlp") return declared_keys(add_mlp_fields);
  if (kind == "dit") {
    auto keys = declared_keys(add_dit_fields);
    keys.insert({"model.in_channels", "model.resolution"});
    return keys;
  }
  std::set<std::string> keys;
  for (const char* key : {"in_channels", "out_channels", "resolution", "model_channels", "channel_mult", "blocks_per_level", "attn_resolutions", "dropout",
                          "channel_mult_emb", "augment_dim"})
    keys.insert(std::string("model.") + key);
  if (kind == "song_unet") {
    keys.merge(declared_keys(add_song_unet_fields));
    keys.insert("model.noise_embedding");
  }
  if (kind == "edm2_unet") {
    keys.erase("model.out_channels");
    keys.erase("model.augment_dim");
    keys.insert({"model.channel_mult_noise", "model.channels_per_head"});
    keys.merge(declared_keys(add_edm2_unet_fields));
  }
  return keys;
}

void reject_keys_of_other_kind(const Config& config, const std::string& kind) {
  auto foreign = declared_keys(add_unet_fields);
  foreign.merge(declared_keys(add_mlp_fields));
  foreign.merge(declared_keys(add_song_unet_fields));
  foreign.merge(declared_keys(add_edm2_unet_fields));
  foreign.merge(declared_keys(add_dit_fields));
  for (const auto& key : keys_read_by(kind)) foreign.erase(key);
  for (const auto& key : foreign)
    DISTILLERY_CHECK(!config.is_set(key), Error(fmt::format("config key '{}' does not apply to model.kind {}", key, kind))
                                               .file(config.source()).field(key).hint("remove it, or set model.kind to the network it belongs to"));
  DISTILLERY_CHECK(kind == "unet" || kind == "mlp" || !config.get_bool("model.target_time"),
                   Error(fmt::format("model.kind {} has no target-time input", kind)).file(config.source()).field("model.target_time")
                       .expected("false, or model.kind unet or mlp for a trajectory model"));
}

}  // namespace

void add_network_fields(ConfigSchema& schema) {
  schema.add({"model.kind", ConfigType::String,
              "network: a UNet for images, an MLP for low-dimensional data, or the published networks (song_unet: EDM's DDPM++/NCSN++, "
              "dhariwal_unet: EDM's ADM, edm2_unet: EDM2's magnitude-preserving UNet, dit: the Diffusion Transformer)",
              "unet", false, {"unet", "mlp", "song_unet", "dhariwal_unet", "edm2_unet", "dit"}});
  schema.add({"model.num_classes", ConfigType::Int, "number of classes (0: unconditional)", "0"}, NumberRange::between(0, 1000000));
  schema.add({"model.label_dropout", ConfigType::Float, "label dropout probability while training (classifier-free guidance)", "0.1"}, NumberRange::between(0, 1));
  schema.add({"model.target_time", ConfigType::Bool,
              "a second time input, the σ a trajectory model (CTM) jumps to; its layer starts at zero, so the network starts as the one without", "false"});
  add_unet_fields(schema, "model.");
  add_mlp_fields(schema, "model.");
  add_song_unet_fields(schema, "model.");
  add_edm2_unet_fields(schema, "model.");
  add_dit_fields(schema, "model.");
  std::vector<std::string> parameterizations;
  for (int i = 0; i < kParameterizationCount; ++i) parameterizations.emplace_back(parameterization_name(static_cast<Parameterization>(i)));
  schema.add({"precond.parameterization", ConfigType::String, "what the network predicts, converted to an EDM denoiser at its edge", "edm", false,
              parameterizations});
  schema.add({"precond.sigma_data", ConfigType::Float, "standard deviation of the data", "0.5"}, NumberRange::above(0));
  schema.add({"precond.sigma_min", ConfigType::Float, "smallest σ samplers use", "0.002"}, NumberRange::above(0));
  schema.add({"precond.sigma_max", ConfigType::Float, "largest σ samplers start from", "80"}, NumberRange::above(0));
}

NetworkDenoiser::Parts NetworkDenoiser::parts_of(const UNetConfig& c) {
  UNet net(c);
  nlohmann::json model = {{"kind", "unet"},
                                {"in_channels", c.in_channels},       {"out_channels", c.out_channels},
                                {"resolution", c.resolution},         {"model_channels", c.model_channels},
                                {"channel_mult", c.channel_mult},     {"blocks_per_level", c.blocks_per_level},
                                {"attn_resolutions", c.attn_resolutions}, {"channels_per_head", c.channels_per_head},
                                {"dropout", c.dropout},               {"num_classes", c.num_classes},
                                {"label_dropout", c.label_dropout},   {"noise_embedding", c.noise_embedding}};
  if (c.target_time) model["target_time"] = true;
  return {net.ptr(),
          [net](const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const at::Tensor& c_noise_target) mutable {
            return net->forward(x_in, c_noise, labels, c_noise_target);
          },
          [net](const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const at::Tensor& c_noise_target,
                const FeatureVisitor& visit) mutable { net->features(x_in, c_noise, labels, c_noise_target, visit); },
          net->feature_taps(),
          model.dump(),
          {c.in_channels, c.resolution, c.resolution},
          c.num_classes,
          c.target_time};
}

NetworkDenoiser::Parts NetworkDenoiser::parts_of(const MLPConfig& c) {
  MLP net(c);
  nlohmann::json model = {{"kind", "mlp"},         {"shape", c.shape},
                                {"hidden", c.hidden},    {"layers", c.layers},
                                {"embedding", c.embedding}, {"num_classes", c.num_classes},
                                {"label_dropout", c.label_dropout}};
  if (c.target_time) model["target_time"] = true;
  return {net.ptr(),
          [net](const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const at::Tensor& c_noise_target) mutable {
            return net->forward(x_in, c_noise, labels, c_noise_target);
          },
          [net](const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const at::Tensor& c_noise_target,
                const FeatureVisitor& visit) mutable { net->features(x_in, c_noise, labels, c_noise_target, visit); },
          net->feature_taps(),
          model.dump(),
          c.shape,
          c.num_classes,
          c.target_time};
}

// EDM's networks take no target time.
template <typename Network>
NetworkDenoiser::Parts NetworkDenoiser::edm_network_parts(Network net, std::string model_json, std::vector<int64_t> sample_shape, int64_t num_classes) {
  return {net.ptr(),
          [net](const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const at::Tensor&) mutable {
            return net->forward(x_in, c_noise, labels);
          },
          [net](const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const at::Tensor&, const FeatureVisitor& visit) mutable {
            net->features(x_in, c_noise, labels, visit);
          },
          net->feature_taps(),
          std::move(model_json),
          std::move(sample_shape),
          num_classes,
          false};
}

NetworkDenoiser::Parts NetworkDenoiser::parts_of(const SongUNetConfig& c) {
  return edm_network_parts(SongUNet(c), song_unet_config_json(c), {c.in_channels, c.resolution, c.resolution}, c.num_classes);
}

NetworkDenoiser::Parts NetworkDenoiser::parts_of(const DhariwalUNetConfig& c) {
  return edm_network_parts(DhariwalUNet(c), dhariwal_unet_config_json(c), {c.in_channels, c.resolution, c.resolution}, c.num_classes);
}

NetworkDenoiser::Parts NetworkDenoiser::parts_of(const Edm2UNetConfig& c) {
  return edm_network_parts(Edm2UNet(c), edm2_unet_config_json(c), {c.channels, c.resolution, c.resolution}, c.num_classes);
}

// The ODE reads DiT's ε; the learned variance's half of the output is left out.
NetworkDenoiser::Parts NetworkDenoiser::parts_of(const DitConfig& c) {
  Dit net(c);
  const int64_t channels = c.in_channels;
  return {net.ptr(),
          [net, channels](const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const at::Tensor&) mutable {
            return net->forward(x_in, c_noise, labels).narrow(1, 0, channels);
          },
          [net](const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const at::Tensor&, const FeatureVisitor& visit) mutable {
            net->features(x_in, c_noise, labels, visit);
          },
          net->feature_taps(),
          dit_config_json(c),
          {c.in_channels, c.resolution, c.resolution},
          c.num_classes,
          false};
}

NetworkDenoiser::NetworkDenoiser(Parts parts, PrecondSettings precond)
    : module_(std::move(parts.module)),
      raw_features_(std::move(parts.features)),
      taps_(std::move(parts.taps)),
      model_json_(std::move(parts.model_json)),
      sample_shape_(std::move(parts.sample_shape)),
      num_classes_(parts.num_classes),
      target_time_(parts.target_time),
      precond_(precond),
      preconditioned_(precond.parameterization, std::move(parts.forward), {.sigma_min = precond.sigma_min, .sigma_data = precond.sigma_data}) {}

NetworkDenoiser::NetworkDenoiser(const UNetConfig& config, PrecondSettings precond) : NetworkDenoiser(parts_of(config), precond) {}
NetworkDenoiser::NetworkDenoiser(const MLPConfig& config, PrecondSettings precond) : NetworkDenoiser(parts_of(config), precond) {}
NetworkDenoiser::NetworkDenoiser(const SongUNetConfig& config, PrecondSettings precond) : NetworkDenoiser(parts_of(config), precond) {}
NetworkDenoiser::NetworkDenoiser(const DhariwalUNetConfig& config, PrecondSettings precond) : NetworkDenoiser(parts_of(config), precond) {}
NetworkDenoiser::NetworkDenoiser(const Edm2UNetConfig& config, PrecondSettings precond) : NetworkDenoiser(parts_of(config), precond) {}
NetworkDenoiser::NetworkDenoiser(const DitConfig& config, PrecondSettings precond) : NetworkDenoiser(parts_of(config), precond) {}

std::unique_ptr<NetworkDenoiser> NetworkDenoiser::from_config(const Config& config) {
  const auto kind = config.get_string("model.kind");
  reject_keys_of_other_kind(config, kind);
  const PrecondSettings precond{parameterization_from_name(config.get_string("precond.parameterization")), config.get_float("precond.sigma_data"),
                                config.get_float("precond.sigma_min"), config.get_float("precond.sigma_max")};
  DISTILLERY_CHECK(precond.sigma_min < precond.sigma_max, Error("precond.sigma_min must be below precond.sigma_max").file(config.source())
                                                          .field("precond.sigma_min").got(fmt::format("{} and {}", precond.sigma_min, precond.sigma_max)));
  if (kind == "mlp") return std::make_unique<NetworkDenoiser>(mlp_config_from(config, "model."), precond);
  if (kind == "song_unet") return std::make_unique<NetworkDenoiser>(song_unet_config_from(config, "model."), precond);
  if (kind == "dhariwal_unet") return std::make_unique<NetworkDenoiser>(dhariwal_unet_config_from(config, "model."), precond);
  if (kind == "edm2_unet") return std::make_unique<NetworkDenoiser>(edm2_unet_config_from(config, "model."), precond);
  if (kind == "dit") return std::make_unique<NetworkDenoiser>(dit_config_from(config, "model."), precond);
  return std::make_unique<NetworkDenoiser>(unet_config_from(config, "model."), precond);
}

at::Tensor NetworkDenoiser::denoise(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& labels) {
  return preconditioned_.denoise(x, sigma.to(torch::kFloat32), labels);
}

at::Tensor NetworkDenoiser::denoise_toward(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& sigma_target, const at::Tensor& labels) {
  if (!target_time_) return denoise(x, sigma, labels);
  return preconditioned_.denoise_toward(x, sigma.to(torch::kFloat32), sigma_target.to(torch::kFloat32), labels);
}

const FeatureTap& NetworkDenoiser::feature_tap(const std::string& name) const {
  const auto tap = std::find_if(taps_.begin(), taps_.end(), [&](const FeatureTap& t) { return t.name == name; });
  if (tap != taps_.end()) return *tap;
  std::vector<std::string> names;
  for (const auto& t : taps_) names.push_back(t.name);
  throw Error(fmt::format("this network has no feature tap '{}'", name)).expected(fmt::format("one of {}", fmt::join(names, ", "))).got(describe());
}

FeatureMap NetworkDenoiser::features(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& labels, const std::vector<std::string>& taps) {
  std::set<std::string> wanted;
  for (const auto& name : taps) wanted.insert(feature_tap(name).name);
  FeatureMap found;
  if (wanted.empty()) return found;
  const auto [x_in, c_noise] = preconditioned_.network_inputs(x, sigma.to(torch::kFloat32));
  raw_features_(x_in, c_noise, labels, c_noise, [&](const std::string& tap, const at::Tensor& features) {
    if (wanted.count(tap)) found.emplace(tap, features);
    return found.size() < wanted.size();
  });
  return found;
}

void NetworkDenoiser::to(const c10::Device& device) {
  module_->to(device);
  preconditioned_.to(device);
}

std::string NetworkDenoiser::config_json() const {
  return fmt::format(R"({{"model":{},"precond":{}}})", model_json_,
                     nlohmann::json{{"parameterization", parameterization_name(precond_.parameterization)}, {"sigma_data", precond_.sigma_data},
                                    {"sigma_min", precond_.sigma_min}, {"sigma_max", precond_.sigma_max}}.dump());
}

std::string NetworkDenoiser::describe() const { return fmt::format("{}-network {}", parameterization_name(precond_.parameterization), config_json()); }

std::map<std::string, std::string> NetworkDenoiser::file_metadata(const std::map<std::string, std::string>& extra) const {
  auto metadata = extra;
  metadata["format"] = kFormat;
  metadata["format_version"] = "1";
  metadata["config"] = config_json();
  return metadata;
}

void NetworkDenoiser::save(const std::filesystem::path& path, const std::map<std::string, std::string>& extra_metadata) const {
  save_tensor_file(path, module_tensors(*module_), file_metadata(extra_metadata));
}

std::unique_ptr<NetworkDenoiser> NetworkDenoiser::clone(const NetworkChanges& changes) const {
  auto config = nlohmann::json::parse(config_json());
  if (changes.parameterization) config["precond"]["parameterization"] = parameterization_name(*changes.parameterization);
  if (changes.target_time) config["model"]["target_time"] = true;
  auto copy = from_config(Config::parse(denoiser_schema(), config.dump(), "a denoiser's config"));
  copy->to(device());
  // A target-time layer the original lacks keeps its zero initialisation.
  std::map<std::string, at::Tensor> tensors;
  for (auto& [name, tensor] : module_tensors(*copy->module_)) tensors.emplace(name, tensor);
  for (auto& [name, tensor] : module_tensors(*module_)) tensors.insert_or_assign(name, tensor);
  load_module_tensors(*copy->module_, tensors, "the copied denoiser");
  copy->module_->eval();
  return copy;
}

std::unique_ptr<NetworkDenoiser> NetworkDenoiser::load(const std::filesystem::path& path) { return from_file(load_tensor_file(path)); }

std::unique_ptr<NetworkDenoiser> NetworkDenoiser::from_file(const TensorFile& file) {
  const std::filesystem::path path = file.source;
  const auto format = file.metadata.find("format");
  DISTILLERY_CHECK(format != file.metadata.end() && format->second == kFormat,
                   Error("not a distillery denoiser file").file(path.string()).expected(std::string("metadata format = ") + kFormat)
                       .got(format == file.metadata.end() ? "no format in the metadata" : format->second));
  DISTILLERY_CHECK(file.metadata.count("format_version") && file.metadata.at("format_version") == "1",
                   Error("unsupported denoiser format version").file(path.string()).expected("1"));
  DISTILLERY_CHECK(file.metadata.count("config"), Error("denoiser file has no config in its metadata").file(path.string()));
  return from_tensors(file.metadata.at("config"), file.tensors, path.string());
}

std::unique_ptr<NetworkDenoiser> NetworkDenoiser::from_tensors(const std::string& config_json, const std::map<std::string, at::Tensor>& tensors,
                                                               const std::string& source) {
  // The stored config is JSON, which YAML reads as it is, so the same schema validates it.
  const auto config = Config::parse(denoiser_schema(), config_json, source + " (metadata config)");
  size_t file_bytes = 0;
  for (const auto& [name, tensor] : tensors) file_bytes += tensor.nbytes();
  std::unique_ptr<NetworkDenoiser> denoiser;
  {
    // The network's parameters and buffers are the file's tensors, so the sizes the metadata
    // declares are checked against them while the network is built, before it takes memory
    // the file does not justify: twice its tensors, plus room for what building allocates.
    constexpr size_t kBuildingRoom = size_t{64} << 20;
    const AllocationBudget budget(2 * file_bytes + kBuildingRoom, [&](size_t bytes) {
      return Error("the network the file's metadata declares is far larger than the weights the file holds").file(source)
          .field("metadata config").expected(fmt::format("a network of about {}, the size of the file's tensors", megabytes(file_bytes)))
          .got(fmt::format("a network of more than {}", megabytes(bytes))).hint("the metadata was altered, or belongs to another network");
    });
    try {
      denoiser = from_config(config);
    } catch (Error& e) {
      // The network's own checks (an odd embedding, heads that do not split) know no file.
      if (e.file().empty()) e.file(source + " (metadata config)");
      throw;
    }
  }
  load_module_tensors(*denoiser->module_, tensors, source);
  denoiser->module_->eval();
  return denoiser;
}

void NetworkDenoiser::copy_weights_from(const NetworkDenoiser& other) {
  DISTILLERY_CHECK(other.config_json() == config_json(), Error("a network takes the weights of another of the same architecture only")
                                                             .expected(describe()).got(other.describe()));
  torch::NoGradGuard no_grad;
  const auto mine = module_tensors(*module_), theirs = module_tensors(*other.module_);
  for (size_t i = 0; i < mine.size(); ++i) mine[i].second.copy_(theirs[i].second);
}

}  // namespace distillery
