// defines: add_multistep_fields, ConsistencySampling
// The σ points a consistency student samples at with 1, 2 or 4 steps (multistep consistency
// sampling, Song et al. 2023, Algorithm 1). A consistency model maps any σ to the data, so one
// student serves every step count; these grids travel in its file's metadata
// (student_step_sigmas), where `generate --steps k` finds them. The 2-step midpoint 0.821 is
// iCT's and ECT's on CIFAR-10 (σ_data 0.5, as here).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "samplers/sampling.h"

namespace distillery {

class Config;
class ConfigSchema;

void add_multistep_fields(ConfigSchema& schema);

// How a consistency method's student samples: multistep sampling on student.sigmas (default
// [σ_max], one step) during training, and the grids for other step counts in its file: step
// count → σ points, first σ_max, from student.multistep_sigmas or by default
// {1: [σ_max], 2: [σ_max, 0.821], 4: [σ_max, 2, 0.821, 0.3]}. Error for a grid that is not
// positive and strictly decreasing, or for two grids with the same step count.
class ConsistencySampling {
 public:
  ConsistencySampling(const Config& config, double sigma_max);
  const SampleRequest& request() const { return request_; }
  // `metadata` (a method's TrainingMethod::output_metadata()) with student_step_sigmas
  // ({"1": [...], "2": [...], ...}) added.
  std::map<std::string, std::string> with_grids(std::map<std::string, std::string> metadata) const;

 private:
  SampleRequest request_;
  std::map<int, std::vector<double>> grids_;
};

}  // namespace distillery
