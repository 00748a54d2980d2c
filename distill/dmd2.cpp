#include "distill/dmd2.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include <cmath>
#include <numeric>
#include <optional>
#include <set>

#include "core/config.h"
#include "core/error.h"
#include "core/rng.h"
#include "distill/common/discriminator_heads.h"
#include "distill/common/few_step_generator.h"
#include "distill/common/real_data_stream.h"
#include "distill/common/sigma_sampling.h"
#include "distill/common/store_pairs.h"
#include "distill/common/student_network.h"
#include "models/guidance.h"
#include "models/network_denoiser.h"
#include "samplers/schedule.h"
#include "teachers/edm_loss.h"
#include "teachers/teacher.h"
#include "train/trainer.h"
#include "trajectories/trajectory_reader.h"

namespace distillery {

void add_dmd2_fields(ConfigSchema& s) {
  s.add({"dmd2.generator_lr", ConfigType::Float, "generator learning rate (its optimiser: optimizer.*)", "1e-5"}, NumberRange::above(0));
  s.add({"dmd2.critic_lr", ConfigType::Float, "critic (fake score) learning rate", "1e-5"}, NumberRange::above(0));
  s.add({"dmd2.critic_steps", ConfigType::Int, "critic updates per generator update (two time scales)", "5"}, NumberRange::between(1, 1000));
  s.add({"dmd2.guidance", ConfigType::Float, "classifier-free guidance scale of the real score (1: plain conditional)", "1"}, NumberRange::at_least(0));
  s.add({"dmd2.dm_range", ConfigType::FloatList, "σ range of the distribution-matching loss, as fractions of a 1000-point Karras grid", "[0.02, 0.98]"}, NumberRange::between(0, 1));
  s.add({"dmd2.critic_range", ConfigType::FloatList, "σ range of the critic's denoising loss, as fractions of the same grid", "[0.0, 1.0]"}, NumberRange::between(0, 1));
  s.add({"dmd2.regression_weight", ConfigType::Float, "weight of the MSE to the teacher's samples of the same noise (0: off)", "0"}, NumberRange::at_least(0));
  s.add({"dmd2.regression_store", ConfigType::String, "trajectory store of the teacher holding those (noise, sample) pairs", "\"\""});
  add_regression_source_field(s, "dmd2");
  s.add({"dmd2.gan_generator_weight", ConfigType::Float, "weight of the generator's GAN loss through the critic's heads (0: no GAN; DMD2: 3e-3)", "0"}, NumberRange::at_least(0));
  s.add({"dmd2.gan_critic_weight", ConfigType::Float, "weight of the critic's GAN loss, real images from data.* (DMD2: 1e-2)", "0"}, NumberRange::at_least(0));
  s.add({"dmd2.gan_range", ConfigType::FloatList, "σ range of the noise on real and generated images the GAN head sees, as fractions of the Karras grid",
         "[0.0, 1.0]"}, NumberRange::between(0, 1));
  s.add({"dmd2.gan_taps", ConfigType::StringList,
         "the critic's feature taps that get a GAN head (UNet: enc.<k>, bottleneck, dec.<k>; MLP: layer.<k>)", "[bottleneck]"});
}

Dmd2Settings dmd2_settings_from(const Config& c) {
  Dmd2Settings s;
  s.student_sigmas = c.get_float_list("student.sigmas");
  s.generator_lr = c.get_float("dmd2.generator_lr");
  s.critic_lr = c.get_float("dmd2.critic_lr");
  s.critic_steps = c.get_int("dmd2.critic_steps");
  s.guidance = c.get_float("dmd2.guidance");
  const auto range = [&](const char* key) {
    const auto r = c.get_float_list(key);
    DISTILLERY_CHECK(r.size() == 2 && r[0] < r[1],
                     Error("a σ range must be two fractions, low < high").file(c.source()).field(key).got(fmt::format("[{}]", fmt::join(r, ", "))));
    return std::pair{r[0], r[1]};
  };
  std::tie(s.dm_low, s.dm_high) = range("dmd2.dm_range");
  std::tie(s.critic_low, s.critic_high) = range("dmd2.critic_range");
  std::tie(s.gan_low, s.gan_high) = range("dmd2.gan_range");
  s.gan_generator_weight = c.get_float("dmd2.gan_generator_weight");
  s.gan_critic_weight = c.get_float("dmd2.gan_critic_weight");
  s.gan_taps = c.get_string_list("dmd2.gan_taps");
  DISTILLERY_CHECK((s.gan_generator_weight > 0) == (s.gan_critic_weight > 0),
                   Error("the GAN weights must both be positive (GAN on) or both 0 (off)").file(c.source()).field("dmd2.gan_critic_weight")
                       .got(fmt::format("generator {}, critic {}", s.gan_generator_weight, s.gan_critic_weight)));
  s.regression_weight = c.get_float("dmd2.regression_weight");
  s.regression_store = c.get_string("dmd2.regression_store");
  DISTILLERY_CHECK(s.regression_weight == 0 || !s.regression_store.empty(),
                   Error("the regression loss needs the teacher's trajectory store").file(c.source()).field("dmd2.regression_store")
                       .hint("record one with `distillery record`, or set dmd2.regression_weight=0"));
  return s;
}

at::Tensor distribution_matching_loss(const at::Tensor& x, const at::Tensor& real_denoised, const at::Tensor& fake_denoised) {
  at::Tensor direction;
  {
    torch::NoGradGuard no_grad;
    std::vector<int64_t> reduce(static_cast<size_t>(x.dim() - 1));
    std::iota(reduce.begin(), reduce.end(), 1);
    const auto scale = (x - real_denoised).abs().mean(reduce, /*keepdim=*/true);
    direction = torch::nan_to_num((fake_denoised - real_denoised) / scale);
  }
  return 0.5 * torch::mse_loss(x, x.detach() - direction);
}

namespace {

// The critic's network and the GAN heads as one module: one optimiser and one gradient clip
// cover both, as DMD2's guidance optimiser does.
struct CriticWithHeads : torch::nn::Module {
  CriticWithHeads(const std::shared_ptr<torch::nn::Module>& network, DiscriminatorHeads gan_heads) {
    register_module("network", network);
    heads = register_module("heads", std::move(gan_heads));
  }
  DiscriminatorHeads heads{nullptr};
};

class Dmd2 final : public Dmd2Training {
 public:
  Dmd2(const Config& config, const std::string& teacher_spec, const c10::Device& device)
      : settings_(dmd2_settings_from(config)), device_(device), teacher_(load_teacher(teacher_spec, device)) {
    generator_ = make_student_network(config, teacher_spec, *teacher_);
    // The critic starts as the teacher's score, as in DMD2: the generator's initial network
    // when that is the teacher's or one built from scratch for an analytic teacher, the
    // teacher's own network when the generator starts from another run's student. Like the
    // generator it stays in eval mode.
    const auto* teacher_network = dynamic_cast<const NetworkDenoiser*>(teacher_.get());
    critic_ = student_starts_from_file(config) && teacher_network ? teacher_network->clone() : generator_->clone();
    if (settings_.student_sigmas.empty()) settings_.student_sigmas = {teacher_->sigma_max()};
    classes_ = student_classes(config, generator_->num_classes());
    few_step_.emplace(*generator_, settings_.student_sigmas,
                      GeneratorStreams{noise_stream::dmd2_generator_noise, noise_stream::dmd2_student_step, noise_stream::dmd2_simulation}, classes_);
    request_.sampler = "multistep";
    request_.sigmas = settings_.student_sigmas;
    request_.steps = static_cast<int>(settings_.student_sigmas.size());
    request_.labels = label_policy_of(classes_, generator_->num_classes());

    DISTILLERY_CHECK(settings_.guidance == 1.0 || teacher_->num_classes() > 0, Error("guidance needs a class-conditional teacher").field("dmd2.guidance"));
    set_real_score(nullptr);
    sigma_grid_.emplace(teacher_->sigma_min(), teacher_->sigma_max());
    if (settings_.regression_weight > 0) {
      pairs_ = open_regression_store(config, "dmd2", teacher_spec, *generator_, settings_.student_sigmas.front());
    }
    critic_optimized_ = &critic_->module();
    if (settings_.gan()) {
      const auto taps = configured_taps(config, "dmd2.gan_taps", critic_->feature_taps());
      torch::manual_seed(static_cast<uint64_t>(config.get_int("train.seed")));
      critic_with_heads_ = std::make_shared<CriticWithHeads>(critic_->shared_module(), DiscriminatorHeads(taps));
      critic_with_heads_->heads->to(device);
      critic_with_heads_->heads->eval();
      critic_optimized_ = critic_with_heads_.get();
      real_data_.emplace(config, generator_->sample_shape(), generator_->num_classes(), noise_stream::dmd2_real_flip, device, classes_);
    }
  }

  NetworkDenoiser* generator() override { return generator_.get(); }
  SampleRequest sampling() const override { return request_; }
  std::vector<CheckpointModule> checkpoint_modules() override {
    std::vector<CheckpointModule> modules = {{"generator", &generator_->module(), generator_->file_metadata()}, {"critic", &critic_->module(), critic_->file_metadata()}};
    if (critic_with_heads_) modules.push_back({"gan_heads", critic_with_heads_->heads.get()});
    return modules;
  }
  std::vector<OptimizerSlot> optimizers() override {
    return {{"generator", &generator_->module(), settings_.generator_lr}, {"critic", critic_optimized_, settings_.critic_lr}};
  }
  // The critic starts as the generator does (see the constructor).
  void start_from(const NetworkDenoiser& initial) override {
    generator_->copy_weights_from(initial);
    critic_->copy_weights_from(initial);
  }
  // Draw 0: the generator's batch; draws 1..critic_steps: the critic's.
  int64_t draws_per_step() const override { return 1 + settings_.critic_steps; }

  void set_real_score(Denoiser* real) override {
    auto& score = real ? *real : *teacher_;
    guided_ = settings_.guidance != 1.0 ? std::make_unique<GuidedDenoiser>(score, settings_.guidance) : nullptr;
    real_ = guided_ ? static_cast<Denoiser*>(guided_.get()) : &score;
  }
  void set_generator_training(bool on) override { generator_training_ = on; }
  NetworkDenoiser& critic() override { return *critic_; }

  std::map<std::string, double> step(StepContext& context) override {
    std::map<std::string, double> stats;
    const auto average = [&](const char* key, double value) { stats[key] += value / static_cast<double>(settings_.critic_steps); };
    for (int64_t k = 1; k <= settings_.critic_steps; ++k) {
      const auto positions = context.positions(k);
      at::Tensor x, labels;
      {
        torch::NoGradGuard no_grad;
        std::tie(x, labels) = few_step_->generate(context.seed, positions);
      }
      const auto sigma = grid_sigmas(context.seed, noise_stream::dmd2_critic_sigma, positions, settings_.critic_low, settings_.critic_high);
      const auto noise = per_sample_normal(context.seed, noise_stream::dmd2_critic_noise, positions, generator_->sample_shape(), x.options());
      auto loss = edm_loss(*critic_, x, sigma, noise, labels, generator_->sigma_data());
      average("critic_loss", loss.item<double>());
      if (settings_.gan()) {
        const auto [real, real_labels] = real_data_->batch(context.seed, positions);
        const auto fake_logits = realism_logits(x, labels, context.seed, noise_stream::dmd2_gan_fake_sigma, noise_stream::dmd2_gan_fake_noise, positions);
        const auto real_logits = realism_logits(real, real_labels, context.seed, noise_stream::dmd2_gan_real_sigma, noise_stream::dmd2_gan_real_noise, positions);
        const auto gan = (torch::softplus(fake_logits) + torch::softplus(-real_logits)).mean();
        average("gan_critic_loss", gan.item<double>());
        // The heads' mean belief that an image is real, the usual discriminator diagnostic.
        average("realism_real", torch::sigmoid(real_logits).mean().item<double>());
        average("realism_fake", torch::sigmoid(fake_logits).mean().item<double>());
        loss = loss + settings_.gan_critic_weight * gan;
      }
      context.update("critic", loss);
    }
    if (!generator_training_) return stats;

    const auto positions = context.positions(0);
    const auto [x, labels] = few_step_->generate(context.seed, positions);
    at::Tensor real_denoised, fake_denoised;
    {
      torch::NoGradGuard no_grad;
      const auto sigma = grid_sigmas(context.seed, noise_stream::dmd2_dm_sigma, positions, settings_.dm_low, settings_.dm_high);
      const auto noise = per_sample_normal(context.seed, noise_stream::dmd2_dm_noise, positions, generator_->sample_shape(), x.options());
      const auto noisy = x + sigma.view(per_sample_view(x)) * noise;
      real_denoised = real_->denoise(noisy, sigma, labels);
      fake_denoised = critic_->denoise(noisy, sigma, labels);
    }
    auto loss = distribution_matching_loss(x, real_denoised, fake_denoised);
    // The loss is 0.5·mean(g²): its value tracks the size of the update direction.
    stats["dm_loss"] = loss.item<double>();
    if (pairs_) {
      const auto regression = one_step_regression(*pairs_, *generator_, squared_l2_distance, context, device_).mean();
      stats["regression_loss"] = regression.item<double>();
      loss = loss + settings_.regression_weight * regression;
    }
    if (settings_.gan()) {
      const auto gan = torch::softplus(-realism_logits(x, labels, context.seed, noise_stream::dmd2_gan_fake_sigma, noise_stream::dmd2_gan_fake_noise, positions)).mean();
      stats["gan_generator_loss"] = gan.item<double>();
      loss = loss + settings_.gan_generator_weight * gan;
    }
    context.update("generator", loss);
    return stats;
  }

 private:
  // The GAN heads' logits [N, taps] for images noised at σ from dmd2.gan_range, read from the
  // critic's taps: gradient reaches the images, the critic and the heads.
  at::Tensor realism_logits(const at::Tensor& x, const at::Tensor& labels, uint64_t seed, uint64_t sigma_stream, uint64_t noise_stream,
                            const std::vector<int64_t>& positions) {
    const auto sigma = grid_sigmas(seed, sigma_stream, positions, settings_.gan_low, settings_.gan_high);
    const auto noise = per_sample_normal(seed, noise_stream, positions, generator_->sample_shape(), x.options());
    const auto noisy = x + sigma.view(per_sample_view(x)) * noise;
    return critic_with_heads_->heads->forward(critic_->features(noisy, sigma, labels, settings_.gan_taps));
  }

  static std::vector<int64_t> per_sample_view(const at::Tensor& x) {
    std::vector<int64_t> view(static_cast<size_t>(x.dim()), 1);
    view[0] = -1;
    return view;
  }

  // σ per position, uniform over the Karras grid points whose index fraction lies in [low, high].
  at::Tensor grid_sigmas(uint64_t seed, uint64_t stream, const std::vector<int64_t>& positions, double low, double high) const {
    return sigma_grid_->draw(seed, stream, positions, low, high, torch::TensorOptions(torch::kFloat32).device(device_));
  }

  Dmd2Settings settings_;
  c10::Device device_;
  std::unique_ptr<Denoiser> teacher_;
  std::unique_ptr<GuidedDenoiser> guided_;
  Denoiser* real_ = nullptr;  // what the generator is pulled toward (set_real_score's score, guided)
  bool generator_training_ = true;
  std::unique_ptr<NetworkDenoiser> generator_, critic_;
  std::shared_ptr<CriticWithHeads> critic_with_heads_;  // GAN only
  torch::nn::Module* critic_optimized_ = nullptr;     // what the critic's optimiser updates
  std::optional<FewStepGenerator> few_step_;
  std::optional<RealDataStream> real_data_;  // GAN only
  std::unique_ptr<TrajectoryReader> pairs_;
  std::vector<int64_t> classes_;  // student.classes
  std::optional<KarrasGridSampler> sigma_grid_;
  SampleRequest request_;
};

}  // namespace

std::unique_ptr<Dmd2Training> make_dmd2_training(const Config& config, const std::string& teacher, const c10::Device& device) {
  return std::make_unique<Dmd2>(config, teacher, device);
}

std::unique_ptr<TrainingMethod> make_dmd2(const Config& config, const std::string& teacher, const c10::Device& device) {
  return make_dmd2_training(config, teacher, device);
}

}  // namespace distillery
