#include "distill/instaflow.h"

#include <torch/types.h>


#include "core/config.h"
#include "core/error.h"
#include "core/rng.h"
#include "distill/common/distances.h"
#include "distill/common/sigma_sampling.h"
#include "distill/common/store_pairs.h"
#include "distill/common/student_network.h"
#include "models/network_denoiser.h"
#include "samplers/sampler.h"
#include "teachers/teacher.h"
#include "train/trainer.h"
#include "trajectories/trajectory_reader.h"

namespace distillery {

void add_instaflow_fields(ConfigSchema& s) {
  s.add({"instaflow.lr", ConfigType::Float, "student learning rate (its optimiser: optimizer.*)", "1e-5"}, NumberRange::above(0));
  s.add({"instaflow.store", ConfigType::String, "trajectory store recorded from the reflowed teacher: its noise and final states are the pairs", "\"\""});
  add_distance_fields(s, "instaflow");
  s.add({"instaflow.guidance_weight", ConfigType::Float, "SlimFlow's flow-guided term: the teacher's one step from a point of the student's "
         "own line at rectified-flow time uniform in [0.2, 0.8] (0: InstaFlow's loss alone)", "0"}, NumberRange::at_least(0));
}

namespace {

class InstaFlowDistillation final : public TrainingMethod {
 public:
  InstaFlowDistillation(const Config& config, const std::string& teacher_spec, const c10::Device& device)
      : lr_(config.get_float("instaflow.lr")), guidance_weight_(config.get_float("instaflow.guidance_weight")), device_(device) {
    teacher_ = load_teacher(teacher_spec, device);
    sigma_max_ = teacher_->sigma_max();
    student_ = make_student_network(config, teacher_spec, *teacher_);
    pairs_ = open_teacher_store(config, "instaflow.store", teacher_spec, *student_,
                                "InstaFlow distils the reflowed teacher's own ODE solutions from a trajectory store");
    distance_ = distance_from(config, "instaflow", student_->sample_shape(), device);
  }

  NetworkDenoiser* generator() override { return student_.get(); }
  SampleRequest sampling() const override {
    SampleRequest request;
    request.sampler = "euler";
    request.sigmas = {sigma_max_};
    request.steps = 1;
    return request;
  }
  std::vector<CheckpointModule> checkpoint_modules() override { return {{"generator", &student_->module(), student_->file_metadata()}}; }
  std::vector<OptimizerSlot> optimizers() override { return {{"generator", &student_->module(), lr_}}; }

  std::map<std::string, double> step(StepContext& context) override {
    const auto pair = pairs_for_step(*pairs_, context);
    const auto x = pair.sample.to(device_), z = pair.noise.to(device_);
    const auto labels = student_->num_classes() > 0 ? pair.labels.to(device_) : at::Tensor();
    const auto generated = denoise_rows(*student_, z * sigma_max_, std::vector<double>(static_cast<size_t>(z.size(0)), sigma_max_), labels);
    auto loss = distance_(generated, x).mean();
    std::map<std::string, double> stats = {{"instaflow_loss", loss.item<double>()}};
    if (guidance_weight_ > 0) {
      const auto u = uniform_per_sample(context.seed, noise_stream::instaflow_guidance_time, context.positions()).contiguous();
      std::vector<double> sigma(static_cast<size_t>(z.size(0)));
      for (size_t r = 0; r < sigma.size(); ++r) {
        const double t = 0.2 + 0.6 * u.data_ptr<double>()[r];
        sigma[r] = t / (1 - t);
      }
      at::Tensor guided;
      {
        torch::NoGradGuard no_grad;
        guided = denoise_rows(*teacher_, generated.detach() + per_row(sigma, z) * z, sigma, labels);
      }
      const auto guidance = distance_(generated, guided).mean();
      stats["guidance_loss"] = guidance.item<double>();
      loss = loss + guidance_weight_ * guidance;
    }
    context.update("generator", loss);
    return stats;
  }

 private:
  double lr_, guidance_weight_, sigma_max_ = 0;
  c10::Device device_;
  std::unique_ptr<Denoiser> teacher_;
  std::unique_ptr<NetworkDenoiser> student_;
  std::unique_ptr<TrajectoryReader> pairs_;
  Distance distance_;
};

}  // namespace

std::unique_ptr<TrainingMethod> make_instaflow(const Config& config, const std::string& teacher, const c10::Device& device) {
  return std::make_unique<InstaFlowDistillation>(config, teacher, device);
}

}  // namespace distillery
