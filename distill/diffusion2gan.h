// defines: add_diffusion2gan_fields, NoiseFeatureReader, paired_with_noise, diffusion2gan_pair_features,
//          diffusion2gan_classifier_pair_features, make_diffusion2gan
// Diffusion2GAN (Kang et al. 2024, "Distilling Diffusion Models into Conditional GANs"): a
// one-step student G(z) = D_θ(σ_max·z; σ_max), starting from the teacher, trained as a
// conditional GAN on the teacher's ODE (noise, image) pairs read from a trajectory store
// (`record --store endpoints`): a regression to the pair's image in the shared distance
// (diffusion2gan.distance; the paper's E-LatentLPIPS is here the classifier's feature
// distance), plus adversarial distillation (distill/common/adversarial_distillation.h) whose
// discriminator sees each image together with the noise it came from: real pairs (z, x_ODE),
// generated pairs (z, G(z)). At each tap, the backbone's features of the image and of the noise
// are stacked along channels, with one head per tap. The backbone (diffusion2gan.features) is
// the teacher, whose features of the noise are those of the state the ODE starts from, or a
// Fashion-MNIST classifier, ADD's and CTM's, whose features of an image are sharper for this
// data than a denoiser's; the noise is then read as an image, its features a fixed function of
// it that the heads can correlate with the image's. The paper fine-tunes the teacher's encoder
// as its discriminator; here the backbone stays frozen, as LADD's, and only the heads learn.
#pragma once

#include <c10/core/Device.h>

#include <functional>
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

// A backbone's features of the noise of each pair, without gradient.
using NoiseFeatureReader = std::function<FeatureMap(const at::Tensor& noise, const at::Tensor& labels)>;

// `of_images` made a discriminator of (noise, image) pairs: each tap's features of the image
// stacked with `of_noise`'s of the condition (the unit noise z), the taps' shapes with twice
// the channels. A read without a noise of the image's shape is an error.
FrozenFeatures paired_with_noise(FrozenFeatures of_images, NoiseFeatureReader of_noise);

// The teacher (frozen here) as the backbone of a discriminator of (noise, image) pairs at `taps`:
// each tap's features of the image at image_sigma stacked with those of the condition, the
// unit noise z, at noise_sigma (input noise_sigma·z); the taps' shapes have twice the channels.
FrozenFeatures diffusion2gan_pair_features(NetworkDenoiser& teacher, const std::vector<FeatureTap>& taps, double image_sigma, double noise_sigma);

// The classifier of diffusion2gan.classifier (frozen) as the backbone, at adversarial.taps: its
// features of each image and of its unit noise z.
FrozenFeatures diffusion2gan_classifier_pair_features(const Config& config, const c10::Device& device);

// `teacher`: a network teacher (teacher.h); the config holds student.*, adversarial.*,
// diffusion2gan.* (the store of the teacher's pairs) and model.* (scratch).
std::unique_ptr<TrainingMethod> make_diffusion2gan(const Config& config, const std::string& teacher, const c10::Device& device);

}  // namespace distillery
