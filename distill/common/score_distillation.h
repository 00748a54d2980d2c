// defines: add_score_distillation_fields, score_distillation_weight, score_distillation_term
// ADD's score distillation (Sauer et al. 2023) as a generator term any adversarial method can
// add: the generated image x̂ is re-noised to a σ of the teacher's grid (uniform over
// PREFIX.distill_range of a 1000-point Karras grid, as ADD's uniform timestep) and pulled toward
// the teacher's denoised estimate of it, PREFIX.distill_weight · mean(c(σ)·‖x̂ −
// sg(D_teacher(x̂ + σ·ε; σ))‖²) (per-element mean), with ADD's weighting c = α_t, the signal scale
// of the variance-preserving process at the same noise-to-signal ratio: c(σ) = 1/√(1 + σ²/σ_data²).
#pragma once

#include <string>

#include "distill/common/adversarial_distillation.h"

namespace distillery {

class Config;
class ConfigSchema;
class Denoiser;

// PREFIX.distill_weight (default `default_weight`; 0: off) and PREFIX.distill_range.
void add_score_distillation_fields(ConfigSchema& schema, const std::string& prefix, const std::string& default_weight);

// ADD's weighting c(σ) of the term: 1/√(1 + σ²/σ_data²).
double score_distillation_weight(double sigma, double sigma_data);

// The weighted term toward `teacher` (kept alive by the caller), logging score_distillation_loss;
// empty when PREFIX.distill_weight is 0. An error names a malformed PREFIX.distill_range.
GeneratorTerm score_distillation_term(const Config& config, const std::string& prefix, Denoiser& teacher, double sigma_data);

}  // namespace distillery
