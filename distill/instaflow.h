// defines: add_instaflow_fields, make_instaflow
// InstaFlow's distillation stage (Liu, Zhang, Ma, Peng & Liu 2024, "InstaFlow: One Step is Enough
// for High-Quality Diffusion-Based Text-to-Image Generation"): once reflow has straightened a
// flow (distill/reflow.h), a one-step student learns that flow's own map from noise to its ODE
// endpoint, d(G_θ(z), x) over the (noise, endpoint) pairs of a trajectory store recorded from
// the reflowed model, where G_θ(z) = D_θ(σ_max·z; σ_max) is the student's single Euler step from
// exactly the state a sampler starts at. The teacher is the reflowed model (the store's, checked
// by fingerprint), and the student starts from it. The distance is the shared one
// (instaflow.distance): InstaFlow's LPIPS is here the Fashion-MNIST classifier's feature distance
// (distill/common/distances.h), or L2 / pseudo-Huber. SlimFlow's flow-guided distillation (Zhu
// et al. 2024) adds instaflow.guidance_weight·d(G_θ(z), D_T(G_θ(z) + σ′·z; σ′)): the teacher's
// one step to the data from a point of the student's own straight line, at rectified-flow time
// t′ uniform in [0.2, 0.8] (σ′ = t′/(1 − t′)), without gradient through the target; with it a
// smaller student (student.init: scratch, model.*) learns from a larger reflowed teacher.
#pragma once

#include <c10/core/Device.h>

#include <memory>
#include <string>

namespace distillery {

class Config;
class ConfigSchema;
class TrainingMethod;

void add_instaflow_fields(ConfigSchema& schema);
// `teacher`: the reflowed model (a teacher spec, teacher.h); the config holds student.*,
// instaflow.*, model.* (scratch).
std::unique_ptr<TrainingMethod> make_instaflow(const Config& config, const std::string& teacher, const c10::Device& device);

}  // namespace distillery
