// defines: add_diffusion2gan_fields, diffusion2gan_pair_features, make_diffusion2gan
// Diffusion2GAN (Kang et al. 2024, "Distilling Diffusion Models into Conditional GANs"): a
// one-step student G(z) = D_θ(σ_max·z; σ_max), starting from the teacher, trained as a
// conditional GAN on the teacher's ODE (noise, image) pairs read from a trajectory store
// (`record --store endpoints`): a regression to the pair's image in the shared distance
// (diffusion2gan.distance; the paper's E-LatentLPIPS is here the classifier's feature
// distance), plus adversarial distillation (distill/common/adversarial_distillation.h) whose
// discriminator sees each image together with the noise it came from: real pairs (z, x_ODE),
// generated pairs (z, G(z)). Its backbone is the teacher: at each tap, the teacher's features of
// the image (fed as it is, at σ = diffusion2gan.image_sigma) and of the noise (as the state the
// ODE starts from, σ_max·z at σ_max) are stacked along channels, with one head per tap. The
// paper fine-tunes the teacher's encoder as its discriminator; here the backbone stays frozen,
// as LADD's, and only the heads learn.
#pragma once

#include <c10/core/Device.h>

#include <memory>
#include <string>
#include <vector>

#include "distill/common/adversarial_distillation.h"

namespace distillery {

class Config;
class ConfigSchema;
class NetworkDenoiser;
class TrainingMethod;

void add_diffusion2gan_fields(ConfigSchema& schema);

// The teacher (frozen here) as the backbone of a discriminator of (noise, image) pairs at `taps`:
// each tap's features of the image at image_sigma stacked with those of the condition, the
// unit noise z, at noise_sigma (input noise_sigma·z); the taps' shapes have twice the channels.
FrozenFeatures diffusion2gan_pair_features(NetworkDenoiser& teacher, const std::vector<FeatureTap>& taps, double image_sigma, double noise_sigma);

// `teacher`: a network teacher (teacher.h); the config holds student.*, adversarial.*,
// diffusion2gan.* (the store of the teacher's pairs) and model.* (scratch).
std::unique_ptr<TrainingMethod> make_diffusion2gan(const Config& config, const std::string& teacher, const c10::Device& device);

}  // namespace distillery
