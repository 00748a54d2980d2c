// defines: ConsistencyTimes, consistency_training_loss, ConsistencyTraining
// Consistency training without a teacher ODE step, as iCT (Song & Dhariwal 2023) and ECT (Geng
// et al. 2024) do it. Each row pairs two noise levels r < t of one example x and one noise z:
// x_t = x + t·z and x_r = x + r·z. The student's f(x_t; t) is pulled toward its own output at the
// smaller level, f(x_r; r), held without gradient (μ = 0: the target is the current student),
// or toward x itself where r falls below σ_min (the boundary condition f(x; σ_min) = x). The
// distance is pseudo-Huber, weighted by λ = 1/(t − r) so that shrinking the gap does not
// shrink the gradient. The methods differ only in how they draw (t, r) at a training step.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "distill/common/multistep_grids.h"
#include "distill/common/real_data_stream.h"
#include "samplers/sampling.h"
#include "train/trainer.h"

namespace distillery {

class Config;
class NetworkDenoiser;

// Per row: the larger level t and the smaller r (r may be 0: the target is then the example).
struct ConsistencyTimes {
  std::vector<double> t, r;
};

// λ(t, r)·d(f(x + t·z; t), sg f(x + r·z; r)) per row [N], with f(·; r) replaced by x where
// r < student.sigma_min() and d the pseudo-Huber distance with constant `huber_c`.
at::Tensor consistency_training_loss(NetworkDenoiser& student, const at::Tensor& x0, const at::Tensor& labels, const at::Tensor& noise,
                                     const ConsistencyTimes& times, double huber_c);

// A consistency-training method: the student (consistency preconditioning, from the teacher's
// network or from scratch per student.init), the data.* stream and the loss above; a subclass
// draws the times.
class ConsistencyTraining : public TrainingMethod {
 public:
  // `huber_c` 0: iCT's 0.00054·√d.
  ConsistencyTraining(const Config& config, const std::string& teacher_spec, const c10::Device& device, double lr, double huber_c);
  ~ConsistencyTraining() override;

  NetworkDenoiser* generator() override { return student_.get(); }
  SampleRequest sampling() const override { return sampling_->request(); }
  std::vector<CheckpointModule> checkpoint_modules() override;
  std::vector<OptimizerSlot> optimizers() override;
  std::map<std::string, double> step(StepContext& context) override;
  std::map<std::string, std::string> output_metadata() const override;

 protected:
  // The (t, r) of each row of this step, given the sample positions.
  virtual ConsistencyTimes times(const StepContext& context, const std::vector<int64_t>& positions) const = 0;
  double sigma_min() const { return sigma_min_; }
  double sigma_max() const { return sigma_max_; }

 private:
  std::unique_ptr<NetworkDenoiser> student_;
  std::optional<RealDataStream> data_;
  std::optional<ConsistencySampling> sampling_;
  double sigma_min_, sigma_max_, lr_, huber_c_;
};

}  // namespace distillery
