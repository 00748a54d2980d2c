#include "eval/domain_classifier.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/nn/functional.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <numeric>

#include "core/config.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/progress.h"
#include "data/augment.h"
#include "data/fashion_mnist.h"
#include "data/shuffled_order.h"
#include "io/tensor_file.h"
#include "models/weights.h"
#include "train/checkpoint.h"
#include "train/optimizer.h"

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

at::Tensor DomainClassifierImpl::forward_features(const at::Tensor& x) {
  DISTILLERY_CHECK(x.dim() == 4 && x.size(1) == 1 && x.size(2) == 28 && x.size(3) == 28,
                   Error("the Fashion-MNIST classifier takes [N, 1, 28, 28] images").got(fmt::format("{} dimensions", x.dim())));
  auto h = F::max_pool2d(torch::relu(conv1_->forward(x)), F::MaxPool2dFuncOptions(2));  // 14×14
  h = F::max_pool2d(torch::relu(conv2_->forward(h)), F::MaxPool2dFuncOptions(2));      // 7×7
  h = torch::relu(conv3_->forward(h));
  return torch::relu(fc_->forward(h.flatten(1)));
}

at::Tensor DomainClassifierImpl::features(const at::Tensor& x) { return forward_features(x); }

at::Tensor DomainClassifierImpl::logits(const at::Tensor& x) {
  return out_->forward(F::dropout(forward_features(x), F::DropoutFuncOptions().p(dropout_).training(is_training())));
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
  DISTILLERY_CHECK(config.is_object() && config.contains("channels") && config.contains("features") && config.contains("classes"),
                   Error("classifier file has no valid config in its metadata").file(path.string()));
  DomainClassifier net(config["channels"].get<int64_t>(), config["features"].get<int64_t>(), config["classes"].get<int64_t>(),
                       config.value("dropout", 0.0));
  load_module_tensors(*net, file.tensors, path.string());
  net->eval();
  return net;
}

const ConfigSchema& classifier_training_schema() {
  static const ConfigSchema schema = [] {
    ConfigSchema s;
    s.add({"model.channels", ConfigType::Int, "channels of the first convolution (doubled twice)", "32"});
    s.add({"model.features", ConfigType::Int, "penultimate feature dimension (the FD features)", "256"});
    s.add({"model.dropout", ConfigType::Float, "dropout before the output layer while training", "0.3"});
    s.add({"data.hflip", ConfigType::Bool, "random horizontal flips", "true"});
    s.add({"train.batch", ConfigType::Int, "images per step", "128"});
    s.add({"train.epochs", ConfigType::Int, "passes over the 60,000 training images", "8"});
    s.add({"train.lr", ConfigType::Float, "Adam learning rate (cosine decay to 0)", "1e-3"});
    s.add({"train.seed", ConfigType::Int, "seed of initial weights, data order, flips and dropout", "0"});
    s.add({"log.every", ConfigType::Int, "steps per stats.jsonl line", "50"});
    s.add({"checkpoint.every", ConfigType::Int, "steps between checkpoints", "200"});
    s.add({"checkpoint.keep", ConfigType::Int, "checkpoints kept", "2"});
    return s;
  }();
  return schema;
}

namespace {
double test_accuracy(DomainClassifier& net, const c10::Device& device) {
  const auto test = load_fashion_mnist("test");
  const auto images = to_model_range(test.images);
  torch::NoGradGuard no_grad;
  net->eval();
  std::vector<at::Tensor> logits;
  for (int64_t start = 0; start < images.size(0); start += 1000) logits.push_back(net->logits(images.slice(0, start, start + 1000).to(device)).cpu());
  return torch::cat(logits).argmax(1).eq(test.labels).to(torch::kFloat64).mean().item<double>();
}
}  // namespace

double train_domain_classifier(const TrainingRunOptions& options) {
  const auto config = Config::load(classifier_training_schema(), options.config_file, options.overrides);
  const int64_t batch = config.get_int("train.batch"), epochs = config.get_int("train.epochs"), log_every = config.get_int("log.every"),
                checkpoint_every = config.get_int("checkpoint.every"), keep = config.get_int("checkpoint.keep");
  DISTILLERY_CHECK(batch > 0 && epochs > 0 && log_every > 0 && checkpoint_every > 0 && keep > 0,
                   Error("train.batch, train.epochs, log.every, checkpoint.every and checkpoint.keep must be positive").file(config.source()));
  const double lr = config.get_float("train.lr");
  const auto seed = static_cast<uint64_t>(config.get_int("train.seed"));
  const auto& out = options.out_dir;
  const auto checkpoints = prepare_run_directory(options, config);

  const auto train = load_fashion_mnist("train");
  const auto images = to_model_range(train.images);
  const int64_t steps_per_epoch = images.size(0) / batch, total = steps_per_epoch * epochs;
  torch::manual_seed(seed);
  DomainClassifier net(config.get_int("model.channels"), config.get_int("model.features"), 10, config.get_float("model.dropout"));
  const auto device = options.runtime.device;
  net->to(device);
  const OptimizerSpec adam;  // Adam's defaults
  const auto optimizer_owner = make_optimizer(adam, *net, lr);
  auto& optimizer = *optimizer_owner;
  const CheckpointModules parts{{{"model", net.ptr().get()}}, {{"optimizer", net.ptr().get(), &optimizer, adam}}};
  int64_t step = 0;
  if (options.resume)
    if (const auto saved = read_newest_checkpoint(checkpoints, [&](const std::string&) { return parts; })) step = nlohmann::json::parse(*saved).at("step").get<int64_t>();
  StatsLog stats(out / "stats.jsonl", step);
  ShuffledOrder order(images.size(0), seed);
  Progress progress("classifier", total, "step", options.show_progress ? stderr : nullptr, step);
  net->train();
  double loss_sum = 0, correct = 0;
  int64_t seen = 0;
  for (; step < total; ++step) {
    torch::manual_seed(fnv1a64(fmt::format("{}:step:{}", seed, step)));
    std::vector<int64_t> indices;
    for (int64_t p = step * batch; p < (step + 1) * batch; ++p) indices.push_back(order.at(p));
    const auto index = torch::tensor(indices, torch::kInt64);
    auto x = images.index_select(0, index).to(device);
    if (config.get_bool("data.hflip")) x = random_hflip(x);
    const auto labels = train.labels.index_select(0, index).to(device);
    // Cosine decay over the whole run.
    const double rate = 0.5 * lr * (1 + std::cos(M_PI * static_cast<double>(step) / static_cast<double>(total)));
    for (auto& group : optimizer.param_groups()) group.options().set_lr(rate);
    const auto logits = net->logits(x);
    const auto loss = F::cross_entropy(logits, labels);
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
    loss_sum += loss.item<double>();
    correct += logits.argmax(1).eq(labels).sum().item<double>();
    seen += batch;
    progress.advance();
    const int64_t done = step + 1;
    if (done % log_every == 0 || done == total) {
      stats.write(nlohmann::json{{"step", done}, {"epoch", static_cast<double>(done) / static_cast<double>(steps_per_epoch)}, {"loss", loss_sum / static_cast<double>(seen / batch)},
                                 {"train_accuracy", correct / static_cast<double>(seen)}, {"lr", rate}}
                      .dump());
      loss_sum = correct = 0;
      seen = 0;
    }
    if (done % checkpoint_every == 0 || done == total) write_checkpoint(checkpoints, done, parts, nlohmann::json{{"step", done}}.dump(), keep);
  }
  progress.finish();
  const double accuracy = test_accuracy(net, device);
  save_tensor_file(out / "classifier.safetensors", module_tensors(*net),
                   {{"format", kFormat}, {"format_version", "1"}, {"config", net->config_json()}, {"test_accuracy", fmt::format("{:.4f}", accuracy)},
                    {"trained_steps", std::to_string(total)}});
  spdlog::info("test accuracy {:.2f}%; wrote {}", 100 * accuracy, (out / "classifier.safetensors").string());
  return accuracy;
}

}  // namespace distillery
