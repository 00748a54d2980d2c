#include "models/routed_denoiser.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/tensor_file.h"
#include "models/network_denoiser.h"
#include "models/weights.h"

namespace distillery {

namespace {
constexpr const char* kRoutedFormat = "distillery.routed_denoiser";
constexpr int64_t kMaxNetworks = 1024;
std::string tensor_prefix(size_t k) { return fmt::format("student.{}.", k); }
}  // namespace

RoutedDenoiser::RoutedDenoiser(std::vector<std::unique_ptr<NetworkDenoiser>> networks, std::vector<int64_t> route)
    : networks_(std::move(networks)), route_(std::move(route)) {
  const auto count = static_cast<int64_t>(networks_.size());
  DISTILLERY_CHECK(count >= 1 && count <= kMaxNetworks, Error("a routed denoiser holds 1 to 1024 networks").got(std::to_string(count)));
  std::vector<int64_t> classes_of(networks_.size(), 0);
  for (const auto k : route_) {
    DISTILLERY_CHECK(k >= 0 && k < count, Error("the router sends a class to a network it does not hold").field("router.route")
                                              .expected(fmt::format("network indices 0..{}", count - 1)).got(std::to_string(k)));
    ++classes_of[static_cast<size_t>(k)];
  }
  for (size_t k = 0; k < networks_.size(); ++k) {
    const auto& network = *networks_[k];
    DISTILLERY_CHECK(classes_of[k] > 0, Error(fmt::format("network {} of the router has no class", k)).field("router.route")
                                            .got(fmt::format("[{}]", fmt::join(route_, ", "))));
    DISTILLERY_CHECK(network.num_classes() == static_cast<int64_t>(route_.size()) && network.sample_shape() == networks_[0]->sample_shape() &&
                         network.sigma_min() == networks_[0]->sigma_min() && network.sigma_max() == networks_[0]->sigma_max(),
                     Error(fmt::format("network {} of the router does not fit its route and the first network", k))
                         .expected(fmt::format("{} classes (the route's length), samples of shape [{}], σ range [{}, {}]", route_.size(),
                                               fmt::join(networks_[0]->sample_shape(), ", "), networks_[0]->sigma_min(), networks_[0]->sigma_max()))
                         .got(network.describe()));
    // A jump toward a target time would fall back to a plain denoising step through the router.
    DISTILLERY_CHECK(!network.has_target_time(), Error(fmt::format("network {} of the router takes a target time, which routing does not pass on", k)));
  }
  route_on_device_ = torch::tensor(route_, torch::kInt64).to(networks_[0]->device());
}

RoutedDenoiser::~RoutedDenoiser() = default;

at::Tensor RoutedDenoiser::denoise(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& labels) {
  DISTILLERY_CHECK(labels.defined() && labels.numel() == x.size(0),
                   Error("a routed denoiser needs one class label per row: each of its networks generates its own classes").field("--labels")
                       .expected(fmt::format("{} labels in 0..{}", x.size(0), route_.size() - 1))
                       .got(labels.defined() ? fmt::format("{} labels", labels.numel()) : "none"));
  if (labels.numel() > 0) {
    const auto low = labels.min().item<int64_t>(), high = labels.max().item<int64_t>();
    DISTILLERY_CHECK(low >= 0 && high < num_classes(), Error("a label the router has no network for (the unconditional label -1 included)").field("--labels")
                                                           .expected(fmt::format("labels in 0..{}", route_.size() - 1)).got(fmt::format("{}..{}", low, high)));
  }
  if (networks_.size() == 1) return networks_[0]->denoise(x, sigma, labels);
  const auto owner = route_on_device_.index_select(0, labels);
  auto out = torch::empty_like(x);
  for (size_t k = 0; k < networks_.size(); ++k) {
    const auto rows = owner.eq(static_cast<int64_t>(k)).nonzero().squeeze(1);
    if (rows.numel() == 0) continue;
    out.index_copy_(0, rows, networks_[k]->denoise(x.index_select(0, rows), sigma.index_select(0, rows), labels.index_select(0, rows)));
  }
  return out;
}

c10::Device RoutedDenoiser::device() const { return networks_[0]->device(); }

void RoutedDenoiser::to(const c10::Device& device) {
  for (auto& network : networks_) network->to(device);
  route_on_device_ = route_on_device_.to(device);
}

std::vector<int64_t> RoutedDenoiser::sample_shape() const { return networks_[0]->sample_shape(); }
double RoutedDenoiser::sigma_min() const { return networks_[0]->sigma_min(); }
double RoutedDenoiser::sigma_max() const { return networks_[0]->sigma_max(); }

std::string RoutedDenoiser::describe() const {
  std::vector<std::string> parts;
  for (const auto& network : networks_) parts.push_back(network->describe());
  return fmt::format("routed by class [{}]: {}", fmt::join(route_, ", "), fmt::join(parts, "; "));
}

void RoutedDenoiser::save(const std::filesystem::path& path, const std::vector<const NetworkDenoiser*>& networks, const std::vector<int64_t>& route,
                          const std::map<std::string, std::string>& extra_metadata) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  auto configs = nlohmann::json::array();
  for (size_t k = 0; k < networks.size(); ++k) {
    for (auto& [name, tensor] : module_tensors(networks[k]->module())) tensors.emplace_back(tensor_prefix(k) + name, tensor);
    configs.push_back(nlohmann::json::parse(networks[k]->config_json()));
  }
  auto metadata = extra_metadata;
  metadata["format"] = kRoutedFormat;
  metadata["format_version"] = "1";
  metadata["router"] = nlohmann::json{{"route", route}, {"networks", configs}}.dump();
  save_tensor_file(path, tensors, metadata);
}

std::unique_ptr<RoutedDenoiser> RoutedDenoiser::from_file(const TensorFile& file) {
  const auto& path = file.source;
  const auto version = file.metadata.find("format_version");
  DISTILLERY_CHECK(version != file.metadata.end() && version->second == "1", Error("unsupported routed denoiser format version").file(path)
                                                                                 .field("format_version").expected("1")
                                                                                 .got(version == file.metadata.end() ? "none" : version->second));
  const auto router_text = file.metadata.find("router");
  DISTILLERY_CHECK(router_text != file.metadata.end(), Error("a routed denoiser file has no router in its metadata").file(path).field("router"));
  const auto router = nlohmann::json::parse(router_text->second, nullptr, false);
  const auto is_index = [](const nlohmann::json& value) { return value.is_number_integer(); };
  DISTILLERY_CHECK(router.is_object() && router.contains("route") && router["route"].is_array() && !router["route"].empty() &&
                       std::all_of(router["route"].begin(), router["route"].end(), is_index) && router.contains("networks") &&
                       router["networks"].is_array() && !router["networks"].empty() && router["networks"].size() <= static_cast<size_t>(kMaxNetworks),
                   Error("the router metadata is not a route and a list of networks").file(path).field("router")
                       .expected(R"({"route": [network of each class], "networks": [1 to 1024 network configs]})").got(router_text->second.substr(0, 200)));
  const auto& configs = router["networks"];
  std::vector<std::map<std::string, at::Tensor>> tensors(configs.size());
  for (const auto& [name, tensor] : file.tensors) {
    size_t k = 0;
    while (k < configs.size() && !name.starts_with(tensor_prefix(k))) ++k;
    DISTILLERY_CHECK(k < configs.size(), Error(fmt::format("tensor '{}' belongs to none of the router's networks", name)).file(path)
                                             .expected(fmt::format("names starting student.0. .. student.{}.", configs.size() - 1)));
    tensors[k].emplace(name.substr(tensor_prefix(k).size()), tensor);
  }
  std::vector<std::unique_ptr<NetworkDenoiser>> networks;
  for (size_t k = 0; k < configs.size(); ++k) {
    DISTILLERY_CHECK(configs[k].is_object(), Error(fmt::format("the router's network {} has no config", k)).file(path).field("router"));
    networks.push_back(NetworkDenoiser::from_tensors(configs[k].dump(), tensors[k], fmt::format("{} (network {})", path, k)));
  }
  try {
    return std::make_unique<RoutedDenoiser>(std::move(networks), router["route"].get<std::vector<int64_t>>());
  } catch (Error& e) {
    e.file(path);
    throw;
  }
}

std::unique_ptr<Denoiser> load_denoiser_file(const std::filesystem::path& path) {
  const auto file = load_tensor_file(path);
  const auto format = file.metadata.find("format");
  if (format != file.metadata.end() && format->second == kRoutedFormat) return RoutedDenoiser::from_file(file);
  return NetworkDenoiser::from_file(file);
}

}  // namespace distillery
