#include "distill/common/consistency_training.h"

#include <torch/types.h>

#include <numeric>

#include "core/config.h"
#include "core/error.h"
#include "core/rng.h"
#include "distill/common/distances.h"
#include "distill/common/student_network.h"
#include "models/network_denoiser.h"
#include "samplers/sampler.h"
#include "teachers/teacher.h"

namespace distillery {

at::Tensor consistency_training_loss(NetworkDenoiser& student, const at::Tensor& x0, const at::Tensor& labels, const at::Tensor& noise,
                                     const ConsistencyTimes& times, double huber_c) {
  const auto rows = static_cast<size_t>(x0.size(0));
  DISTILLERY_CHECK(times.t.size() == rows && times.r.size() == rows, Error("consistency training needs one (t, r) per row"));
  std::vector<int64_t> inside;  // rows whose target is the student's own output
  std::vector<double> inside_r, weight(rows);
  for (size_t i = 0; i < rows; ++i) {
    DISTILLERY_CHECK(times.r[i] < times.t[i], Error("consistency training needs r < t").got(std::to_string(times.r[i])));
    weight[i] = 1.0 / (times.t[i] - times.r[i]);
    if (times.r[i] >= student.sigma_min()) {
      inside.push_back(static_cast<int64_t>(i));
      inside_r.push_back(times.r[i]);
    }
  }
  at::Tensor target = x0;
  if (!inside.empty()) {
    torch::NoGradGuard no_grad;
    const auto index = torch::tensor(inside, torch::kInt64).to(x0.device());
    const auto x_r = x0.index_select(0, index) + per_row(inside_r, x0) * noise.index_select(0, index);
    const auto inside_labels = labels.defined() ? labels.index_select(0, index) : labels;
    target = x0.index_copy(0, index, denoise_rows(student, x_r, inside_r, inside_labels));
  }
  const auto predicted = denoise_rows(student, x0 + per_row(times.t, x0) * noise, times.t, labels);
  return pseudo_huber_distance(predicted, target, huber_c) * per_row(weight, predicted).flatten();
}

ConsistencyTraining::ConsistencyTraining(const Config& config, const std::string& teacher_spec, const c10::Device& device, double lr, double huber_c)
    : lr_(lr) {
  const auto teacher = load_teacher(teacher_spec, device);
  sigma_min_ = teacher->sigma_min();
  sigma_max_ = teacher->sigma_max();
  student_ = make_student_network(config, teacher_spec, *teacher, {.parameterization = Parameterization::Consistency});
  const auto shape = student_->sample_shape();
  huber_c_ = huber_c > 0 ? huber_c : ict_pseudo_huber_c(std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>()));
  data_.emplace(config, shape, student_->num_classes(), noise_stream::consistency_flip, device);
  sampling_.emplace(config, sigma_max_);
}

std::map<std::string, std::string> ConsistencyTraining::output_metadata() const {
  return sampling_->with_grids(TrainingMethod::output_metadata());
}

ConsistencyTraining::~ConsistencyTraining() = default;

std::vector<CheckpointModule> ConsistencyTraining::checkpoint_modules() {
  return {{"generator", &student_->module(), student_->file_metadata()}};
}

std::vector<OptimizerSlot> ConsistencyTraining::optimizers() { return {{"generator", &student_->module(), lr_}}; }

std::map<std::string, double> ConsistencyTraining::step(StepContext& context) {
  const auto positions = context.positions();
  const auto [x0, labels] = data_->batch(context.seed, positions);
  const auto noise = per_sample_normal(context.seed, noise_stream::consistency_noise, positions, student_->sample_shape(), x0.options());
  const auto drawn = times(context, positions);
  const auto loss = consistency_training_loss(*student_, x0, labels, noise, drawn, huber_c_).mean();
  context.update("generator", loss);
  const auto boundary = std::count_if(drawn.r.begin(), drawn.r.end(), [this](double r) { return r < sigma_min_; });
  return {{"consistency_loss", loss.item<double>()}, {"boundary_fraction", static_cast<double>(boundary) / static_cast<double>(drawn.r.size())}};
}

}  // namespace distillery
