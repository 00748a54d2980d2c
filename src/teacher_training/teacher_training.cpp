#include "teacher_training/teacher_training.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include <memory>
#include <optional>

#include "core/config.h"
#include "core/error.h"
#include "core/rng.h"
#include "data/augment.h"
#include "data/shuffled_order.h"
#include "data/training_data.h"
#include "eval/in_loop_evaluation.h"
#include "models/keyed_dropout.h"
#include "models/network_denoiser.h"
#include "samplers/sampling.h"
#include "teachers/edm_loss.h"
#include "train/trainer.h"

namespace distillery {

namespace {


// EDM's denoising score matching as a method of the shared trainer, which adds the warm-up,
// the EMA, checkpoints, grids and evaluation.
class TeacherTraining final : public TrainingMethod {
 public:
  TeacherTraining(const Config& config, const c10::Device& device)
      : seed_(static_cast<uint64_t>(config.get_int("train.seed"))), lr_(config.get_float("train.lr")), p_mean_(config.get_float("loss.p_mean")),
        p_std_(config.get_float("loss.p_std")), label_dropout_(config.get_float("model.label_dropout")), grid_steps_(config.get_int("grid.steps")),
        hflip_(config.get_bool("data.hflip")),
        dataset_(config.get_string("data.dataset")), device_(device) {
    torch::manual_seed(seed_);  // initial weights, drawn on the CPU whatever the device
    model_ = NetworkDenoiser::from_config(config);
    model_->to(device);
    data_ = load_training_data(config, model_->sample_shape());
    const int64_t num_classes = model_->num_classes();
    DISTILLERY_CHECK(num_classes == 0 || data_.labels.min().item<int64_t>() >= 0,
                     Error("a class-conditional model needs labelled data").field("model.num_classes").hint("add dataset.json to the image folder, or set model.num_classes=0"));
    DISTILLERY_CHECK(num_classes == 0 || data_.labels.max().item<int64_t>() < num_classes,
                     Error("the data have more classes than the model").field("model.num_classes").got(std::to_string(num_classes))
                         .expected(fmt::format("at least {}", data_.labels.max().item<int64_t>() + 1)));
    shape_.assign(data_.x0.sizes().begin() + 1, data_.x0.sizes().end());
    DISTILLERY_CHECK(shape_ == model_->sample_shape(),
                     Error("the model does not fit the data").file(config.source()).field("model")
                         .expected(fmt::format("samples of shape [{}]", fmt::join(shape_, ", ")))
                         .got(fmt::format("a model for [{}]", fmt::join(model_->sample_shape(), ", "))));
    DISTILLERY_CHECK(!hflip_ || shape_.size() == 3, Error("horizontal flips need image data").field("data.hflip").got(dataset_));
    order_.emplace(data_.x0.size(0), seed_);
    model_->module().train();
  }

  NetworkDenoiser* generator() override { return model_.get(); }
  SampleRequest sampling() const override {
    SampleRequest request;
    request.sampler = "heun";
    request.steps = static_cast<int>(grid_steps_);
    return request;
  }
  // Checkpoint files of the model and the EMA are denoiser files, usable as teachers.
  std::vector<CheckpointModule> checkpoint_modules() override { return {{"model", &model_->module(), model_->file_metadata()}}; }
  std::vector<OptimizerSlot> optimizers() override { return {{"model", &model_->module(), lr_}}; }
  std::string output_file() const override { return "teacher.safetensors"; }
  std::map<std::string, std::string> output_metadata() const override { return {{"dataset", dataset_}}; }

  std::map<std::string, double> step(StepContext& context) override {
    const auto positions = context.positions();
    std::vector<int64_t> indices;
    for (auto p : positions) indices.push_back(order_->at(p));
    // The data stay on the host; each batch moves to the device.
    const auto index_tensor = torch::tensor(indices, torch::kInt64);
    auto x0 = data_.x0.index_select(0, index_tensor).to(device_);
    if (hflip_) x0 = hflip_per_sample(x0, seed_, noise_stream::teacher_flip, positions);
    const auto labels = model_->num_classes() > 0 ? drop_labels_per_sample(data_.labels.index_select(0, index_tensor).to(device_), label_dropout_, seed_,
                                                                           noise_stream::teacher_label_drop, positions)
                                                  : at::Tensor();
    const auto options = x0.options();
    const auto sigma = (p_mean_ + p_std_ * per_sample_normal(seed_, noise_stream::teacher_sigma, positions, {}, options)).exp();
    const auto noise = per_sample_normal(seed_, noise_stream::teacher_noise, positions, shape_, options);
    const DropoutKeys dropout_keys(seed_, noise_stream::teacher_dropout, positions);
    const auto loss = edm_loss(*model_, x0, sigma, noise, labels, model_->sigma_data());
    context.update("model", loss);
    return {{"loss", loss.item<double>()}};
  }

 private:
  uint64_t seed_;
  double lr_, p_mean_, p_std_, label_dropout_;
  int64_t grid_steps_;
  bool hflip_;
  std::string dataset_;
  c10::Device device_;
  std::unique_ptr<NetworkDenoiser> model_;
  TrainingData data_;
  std::vector<int64_t> shape_;
  std::optional<ShuffledOrder> order_;
};

}  // namespace

const ConfigSchema& teacher_training_schema() {
  static const ConfigSchema schema = [] {
    ConfigSchema s;
    add_training_data_fields(s);
    add_network_fields(s);
    add_trainer_fields(s);
    add_in_loop_evaluation_fields(s);
    s.add({"loss.p_mean", ConfigType::Float, "mean of ln σ during training", "-1.2"});
    s.add({"loss.p_std", ConfigType::Float, "standard deviation of ln σ during training", "1.2"}, NumberRange::above(0));
    s.add({"train.lr", ConfigType::Float, "learning rate after warm-up (the optimiser: optimizer.*)", "5e-4"}, NumberRange::above(0));
    s.add({"grid.steps", ConfigType::Int, "Heun steps of the grids and the in-loop evaluation", "18"}, NumberRange::between(1, 100000));
    // EDM's recipe: no gradient clipping; a long warm-up and EMA for a run of tens of thousands of steps.
    s.set_default("train.batch", "64").set_default("train.steps", "20000").set_default("train.warmup_steps", "1000");
    s.set_default("train.grad_clip", "0").set_default("train.ema_halflife_images", "50000");
    s.set_default("log.every", "100").set_default("checkpoint.every", "1000").set_default("checkpoint.keep", "3").set_default("grid.every", "2000");
    return s;
  }();
  return schema;
}

void train_teacher(const TrainingRunOptions& options) {
  const auto config = Config::load(teacher_training_schema(), options.config_file, options.overrides);
  TeacherTraining method(config, options.runtime.device);
  run_trainer(method, config, options, make_trainer_callbacks(config, method.generator()->sample_shape(), options.runtime));
}

}  // namespace distillery
