#include "eval/domain_classifier.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <torch/nn/functional.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/config.h"
#include "core/error.h"
#include "core/rng.h"
#include "models/keyed_dropout.h"
#include "data/augment.h"
#include "data/fashion_mnist.h"
#include "data/shuffled_order.h"
#include "io/tensor_file.h"
#include "models/weights.h"
#include "train/trainer.h"

namespace distillery {

namespace F = torch::nn::functional;

namespace {
constexpr const char* kFormat = "distillery.classifier";
}

DomainClassifierImpl::DomainClassifierImpl(int64_t channels, int64_t features, int64_t classes, double dropout)
    : channels_(channels), feature_dims_(features), classes_(classes), dropout_(dropout) {
  DISTILLERY_CHECK(channels > 0 && features > 0 && classes > 1, Error("invalid classifier configuration").expected("channels, features > 0; classes > 1"));
  conv1_ = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, channels, 3).padding(1)));
  conv2_ = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, 2 * channels, 3).padding(1)));
  conv3_ = register_module("conv3", torch::nn::Conv2d(torch::nn::Conv2dOptions(2 * channels, 4 * channels, 3).padding(1)));
  fc_ = register_module("fc", torch::nn::Linear(4 * channels * 7 * 7, features));
  out_ = register_module("out", torch::nn::Linear(features, classes));
}

at::Tensor DomainClassifierImpl::forward_features(const at::Tensor& x, const FeatureVisitor& visit) {
  DISTILLERY_CHECK(x.dim() == 4 && x.size(1) == 1 && x.size(2) == 28 && x.size(3) == 28,
                   Error("the Fashion-MNIST classifier takes [N, 1, 28, 28] images").got(fmt::format("{} dimensions", x.dim())));
  const auto deeper = [&](const char* tap, const at::Tensor& h) { return !visit || visit(tap, h); };
  auto h = F::max_pool2d(torch::relu(conv1_->forward(x)), F::MaxPool2dFuncOptions(2));  // 14×14
  if (!deeper("conv1", h)) return {};
  h = F::max_pool2d(torch::relu(conv2_->forward(h)), F::MaxPool2dFuncOptions(2));  // 7×7
  if (!deeper("conv2", h)) return {};
  h = torch::relu(conv3_->forward(h));
  if (!deeper("conv3", h)) return {};
  h = torch::relu(fc_->forward(h.flatten(1)));
  deeper("features", h);
  return h;
}

std::vector<FeatureTap> DomainClassifierImpl::feature_taps() const {
  return {{"conv1", {channels_, 14, 14}}, {"conv2", {2 * channels_, 7, 7}}, {"conv3", {4 * channels_, 7, 7}}, {"features", {feature_dims_}}};
}

FeatureMap DomainClassifierImpl::features_at(const at::Tensor& x, const std::vector<std::string>& taps) {
  std::vector<std::string> known;
  for (const auto& tap : feature_taps()) known.push_back(tap.name);
  for (const auto& tap : taps)
    DISTILLERY_CHECK(std::find(known.begin(), known.end(), tap) != known.end(),
                     Error(fmt::format("the Fashion-MNIST classifier has no feature tap '{}'", tap)).expected(fmt::format("one of: {}", fmt::join(known, ", "))));
  FeatureMap found;
  forward_features(x, [&](const std::string& tap, const at::Tensor& h) {
    if (std::find(taps.begin(), taps.end(), tap) != taps.end()) found[tap] = h;
    return found.size() < taps.size();
  });
  return found;
}

at::Tensor DomainClassifierImpl::features(const at::Tensor& x) { return forward_features(x); }

at::Tensor DomainClassifierImpl::logits(const at::Tensor& x) {
  return out_->forward(keyed_dropout(forward_features(x), dropout_, is_training()));
}

std::string DomainClassifierImpl::config_json() const {
  return nlohmann::json{{"channels", channels_}, {"features", feature_dims_}, {"classes", classes_}, {"dropout", dropout_}}.dump();
}

DomainClassifier load_domain_classifier(const std::filesystem::path& path) {
  const auto file = load_tensor_file(path);
  const auto format = file.metadata.find("format");
  DISTILLERY_CHECK(format != file.metadata.end() && format->second == kFormat,
                   Error("not a distillery classifier file").file(path.string()).expected(std::string("metadata format = ") + kFormat));
  const auto config = nlohmann::json::parse(file.metadata.count("config") ? file.metadata.at("config") : "", nullptr, false);
  // Integers as JSON integers: nlohmann's cast of a float beyond int64 is undefined.
  const auto positive_integer = [&](const char* key) { return config.contains(key) && config[key].is_number_integer() && config[key].get<int64_t>() > 0; };
  DISTILLERY_CHECK(config.is_object() && positive_integer("channels") && positive_integer("features") && positive_integer("classes"),
                   Error("classifier file has no valid config in its metadata").file(path.string())
                       .expected("positive integers channels, features and classes"));
  DomainClassifier net(config["channels"].get<int64_t>(), config["features"].get<int64_t>(), config["classes"].get<int64_t>(),
                       config.value("dropout", 0.0));
  load_module_tensors(*net, file.tensors, path.string());
  net->eval();
  return net;
}

const ConfigSchema& classifier_training_schema() {
  static const ConfigSchema schema = [] {
    ConfigSchema s;
    add_training_loop_fields(s);
    s.add({"model.channels", ConfigType::Int, "channels of the first convolution (doubled twice)", "32"}, NumberRange::between(1, 4096));
    s.add({"model.features", ConfigType::Int, "penultimate feature dimension (the FD features)", "256"}, NumberRange::between(1, 65536));
    s.add({"model.dropout", ConfigType::Float, "dropout before the output layer while training", "0.3"}, NumberRange::from_below(0, 1));
    s.add({"data.hflip", ConfigType::Bool, "random horizontal flips", "true"});
    s.add({"train.lr", ConfigType::Float, "learning rate after warm-up (the optimiser: optimizer.*)", "1e-3"}, NumberRange::above(0));
    // 8 epochs of 468 batches of 128 images, a cosine decay to 0 over all of them, no clipping.
    s.set_default("train.batch", "128").set_default("train.steps", "3744").set_default("train.lr_schedule", "cosine");
    s.set_default("train.grad_clip", "0").set_default("log.every", "50").set_default("checkpoint.every", "200");
    return s;
  }();
  return schema;
}

namespace {

// Cross-entropy on Fashion-MNIST's training images as a method of the shared trainer, which
// adds the learning-rate schedule, checkpoints with exact resume and stats.jsonl. The output
// is the classifier file, with its test-set accuracy in the metadata.
class ClassifierTraining final : public TrainingMethod {
 public:
  ClassifierTraining(const Config& config, const c10::Device& device)
      : seed_(static_cast<uint64_t>(config.get_int("train.seed"))), lr_(config.get_float("train.lr")), hflip_(config.get_bool("data.hflip")), device_(device) {
    const auto train = load_fashion_mnist("train");
    images_ = to_model_range(train.images);
    labels_ = train.labels;
    torch::manual_seed(seed_);  // initial weights, drawn on the CPU whatever the device
    net_ = DomainClassifier(config.get_int("model.channels"), config.get_int("model.features"), 10, config.get_float("model.dropout"));
    net_->to(device);
    net_->train();
    order_.emplace(images_.size(0), seed_);
  }

  NetworkDenoiser* generator() override { return nullptr; }
  std::vector<CheckpointModule> checkpoint_modules() override { return {{"model", net_.ptr().get()}}; }
  std::vector<OptimizerSlot> optimizers() override { return {{"model", net_.ptr().get(), lr_}}; }
  std::string output_file() const override { return "classifier.safetensors"; }
  std::map<std::string, std::string> output_metadata() const override {
    return {{"format", kFormat}, {"format_version", "1"}, {"config", net_->config_json()}};
  }

  std::map<std::string, double> step(StepContext& context) override {
    const auto positions = context.positions();
    std::vector<int64_t> indices;
    for (const auto position : positions) indices.push_back(order_->at(position));
    const auto index = torch::tensor(indices, torch::kInt64);
    auto x = images_.index_select(0, index).to(device_);
    if (hflip_) x = hflip_per_sample(x, seed_, noise_stream::classifier_flip, positions);
    const auto labels = labels_.index_select(0, index).to(device_);
    const DropoutKeys dropout_keys(seed_, noise_stream::classifier_dropout, positions);
    const auto logits = net_->logits(x);
    const auto loss = F::cross_entropy(logits, labels);
    context.update("model", loss);
    return {{"loss", loss.item<double>()}, {"train_accuracy", logits.argmax(1).eq(labels).to(torch::kFloat64).mean().item<double>()}};
  }

  void write_output(const std::filesystem::path& path, const std::map<std::string, std::string>& metadata, const NetworkDenoiser* /*ema*/) override {
    test_accuracy_ = accuracy_on_test_set(net_, device_);
    auto with_accuracy = metadata;
    with_accuracy["test_accuracy"] = fmt::format("{:.4f}", test_accuracy_);
    save_tensor_file(path, module_tensors(*net_), with_accuracy);
    spdlog::info("test accuracy {:.2f}%", 100 * test_accuracy_);
  }
  double test_accuracy() const { return test_accuracy_; }

 private:
  static double accuracy_on_test_set(DomainClassifier& net, const c10::Device& device) {
    const auto test = load_fashion_mnist("test");
    const auto images = to_model_range(test.images);
    torch::NoGradGuard no_grad;
    net->eval();
    std::vector<at::Tensor> logits;
    for (int64_t start = 0; start < images.size(0); start += 1000) logits.push_back(net->logits(images.slice(0, start, start + 1000).to(device)).cpu());
    return torch::cat(logits).argmax(1).eq(test.labels).to(torch::kFloat64).mean().item<double>();
  }

  uint64_t seed_;
  double lr_;
  bool hflip_;
  c10::Device device_;
  at::Tensor images_, labels_;
  DomainClassifier net_{nullptr};
  std::optional<ShuffledOrder> order_;
  double test_accuracy_ = NAN;
};

}  // namespace

double train_domain_classifier(const TrainingRunOptions& options) {
  const auto config = Config::load(classifier_training_schema(), options.config_file, options.overrides);
  ClassifierTraining method(config, options.runtime.device);
  run_trainer(method, config, options);
  return method.test_accuracy();
}

}  // namespace distillery
