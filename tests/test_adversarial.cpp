// The adversarial family (ADD, LADD, Diffusion2GAN): hinge losses and R1 in closed form, frozen
// feature networks, one-step students of the mixture against the teacher's one step, and exact
// resume with the discriminator.
#include "distill/common/paired_augmentation.h"
#include "distill_runs.h"

namespace distillery {
namespace {

// ---- adversarial distillation (ADD, LADD) ----

TEST(Adversarial, HingeLossesMatchTheirClosedForms) {
  const auto real = torch::tensor({{2.0, 0.5}, {-1.0, 0.9}}, torch::kFloat64), fake = torch::tensor({{-3.0, 0.2}, {0.5, -0.5}}, torch::kFloat64);
  // Real: max(0, 1 − l) = 0, 0.5, 2, 0.1; fake: max(0, 1 + l) = 0, 1.2, 1.5, 0.5; each side averaged.
  EXPECT_NEAR(hinge_discriminator_loss(real, fake).item<double>(), 2.6 / 4 + 3.2 / 4, 1e-15);
  EXPECT_NEAR(hinge_generator_loss(fake).item<double>(), 2.8 / 4, 1e-15);
  // Beyond the margins the discriminator's loss is flat: confident heads stop learning.
  EXPECT_EQ(hinge_discriminator_loss(torch::full({3, 2}, 1.5, torch::kFloat64), torch::full({3, 2}, -1.5, torch::kFloat64)).item<double>(), 0);
}

// Two heads, w·x and ½‖x‖², averaged: ∇_x D = ½(w + x), so R1 = mean_r ¼‖w + x_r‖², and its own
// gradient in w (create_graph) is mean_r ½(w + x_r).
TEST(Adversarial, R1PenaltyMatchesTheGradientNormOfAHandCase) {
  const auto w = torch::tensor({0.5, -1.0, 2.0}, torch::kFloat64).requires_grad_(true);
  const auto x = torch::tensor({{1.0, 0.0, -1.0}, {0.3, 0.2, 0.1}}, torch::kFloat64).requires_grad_(true);
  const auto logits = torch::stack({x.matmul(w), 0.5 * x.square().sum(1)}, 1);
  const auto r1 = r1_penalty(logits, x);
  const auto shifted = w.detach() + x.detach();
  EXPECT_NEAR(r1.item<double>(), (0.25 * shifted.square().sum(1)).mean().item<double>(), 1e-14);
  r1.backward();
  EXPECT_TRUE(torch::allclose(w.grad(), (0.5 * shifted).mean(0), 0, 1e-14)) << w.grad();
  EXPECT_THROW(r1_penalty(logits, x.detach()), Error);
}

TEST(Adversarial, ScoreDistillationWeightIsTheSignalScaleOfTheVarianceKeepingProcess) {
  EXPECT_DOUBLE_EQ(score_distillation_weight(0, 0.5), 1);
  EXPECT_DOUBLE_EQ(score_distillation_weight(0.5, 0.5), 1 / std::sqrt(2.0));
  EXPECT_NEAR(score_distillation_weight(80, 0.5), 0.5 / 80, 1e-6);
}

// The discriminator's feature networks are frozen: the heads' loss, R1 included (twice
// differentiated, through the UNet's attention too), reaches the images and the heads and
// leaves the network without gradients.
TEST(Adversarial, FrozenFeatureNetworksPassGradientsToImagesButTakeNone) {
  torch::manual_seed(3);
  NetworkDenoiser teacher(UNetConfig{.resolution = 8, .model_channels = 8, .channel_mult = {1, 2}, .attn_resolutions = {4}, .channels_per_head = 8,
                                     .num_classes = 2});
  teacher.module().eval();
  StepContext context;
  context.batch = 4;
  context.seed = 5;
  const auto taps = std::vector<FeatureTap>{teacher.feature_tap("enc.1"), teacher.feature_tap("bottleneck")};
  auto ladd = noised_teacher_features(teacher, taps, 0.0, 1.0);
  const auto config = Config::parse(distillation_schema("add"), fmt::format("method: add\nadd: {{classifier: \"{}\"}}\n",
                                                                            (testing::kSourceDir / "assets/eval/fmnist-classifier.safetensors").string()),
                                    "add.yaml");
  auto add = classifier_features(config, "add.classifier", torch::kCPU);
  EXPECT_EQ(add.taps.size(), 4u);
  for (auto* features : {&ladd, &add}) {
    const bool images28 = features == &add;
    const auto images = torch::randn(images28 ? std::vector<int64_t>{4, 1, 28, 28} : std::vector<int64_t>{4, 1, 8, 8}).requires_grad_(true);
    const auto labels = torch::tensor({0, 1, 1, 0}, torch::kInt64);
    DiscriminatorHeads heads(features->taps);
    at::Tensor logits;
    {
      MathAttentionScope twice_differentiable;
      logits = heads->forward(features->read(images, labels, {}, context, true));
    }
    (hinge_discriminator_loss(logits, -logits) + r1_penalty(logits, images)).backward();
    EXPECT_TRUE(images.grad().defined() && images.grad().abs().sum().item<double>() > 0);
    for (const auto& p : heads->parameters()) EXPECT_TRUE(p.grad().defined());
    EXPECT_FALSE(features->network->parameters().empty());
    for (const auto& p : features->network->parameters()) EXPECT_FALSE(p.requires_grad() || p.grad().defined());
  }
  EXPECT_EQ(ladd.network.get(), teacher.shared_module().get());
}

// One step from σ_max collapses the teacher's samples towards the mixture's mean; LADD's
// student, trained only by the heads on the teacher's features, spreads them over the modes.
// Both are measured by the sliced Wasserstein distance to exact draws of the mixture.
TEST(Ladd, OneStepStudentOfTheMixtureBeatsTheOneStepTeacherInSlicedWasserstein) {
  const auto dir = testing::scratch_dir();
  const auto teacher_dir = mixture_network_teacher(dir, 800);
  const auto run = ladd_mixture_run(dir, "run", teacher_dir, 400);
  run_distillation(run.options, run.teacher);
  const auto [teacher_sw, student_sw] = one_step_sliced_wasserstein(teacher_dir, run.options.out_dir / "student.safetensors");
  std::printf("sliced W2 to the mixture: teacher 1 step %.4f, LADD student 1 step %.4f\n", teacher_sw, student_sw);
  // Measured: 1.139 (teacher, 1 step; Heun 32: 0.182), 0.322 (student): 3.5× below the
  // one-step teacher. Adversarial training follows its rounding closely, so the bound leaves
  // room for another platform's trajectory: half the one-step teacher's.
  EXPECT_LT(student_sw, teacher_sw / 2);
}

// The adversarial methods carry the student, the heads and both optimisers across the stop.
// Only those two have optimiser state: every entry of the discriminator's belongs to a head.
TEST(Trainer, AdversarialDistillationStopAndResumeEqualsUninterruptedBitForBit) {
  const auto dir = testing::scratch_dir();
  const auto teacher = untrained_mixture_teacher(dir);
  const std::vector<std::string> small = {"student.sigmas=[80.0, 1.0]", "train.batch=16", "train.ema_halflife_images=50", "eval.every=3",
                                          "eval.num=200", "log.every=1", "checkpoint.every=3"};
  const std::vector<std::string> files = {"generator.safetensors", "discriminator_heads.safetensors", "generator_optimizer.safetensors",
                                          "discriminator_optimizer.safetensors", "state.json"};
  auto with_ema = files;
  with_ema.push_back("ema.safetensors");
  // LADD's with noise-conditional heads: their noise MLPs are heads' parameters too.
  auto noise_conditional = small;
  noise_conditional.push_back("adversarial.noise_conditional=true");
  expect_resume_equals_straight(ladd_mixture_run(dir, "ladd-straight", teacher, 6, noise_conditional),
                                ladd_mixture_run(dir, "ladd-resumed", teacher, 6, noise_conditional), 6, with_ema,
                                {"step", "discriminator_loss", "generator_adversarial_loss", "r1", "realism_real", "fd_raw"});
  // ADD's with class-conditional heads: their class embeddings are heads' parameters too.
  const std::vector<std::string> add_overrides = {"data.hflip=true", "adversarial.class_conditional=true"};
  expect_resume_equals_straight(add_image_run(dir, "add-straight", 6, add_overrides), add_image_run(dir, "add-resumed", 6, add_overrides), 6,
                                files, {"step", "discriminator_loss", "generator_adversarial_loss", "score_distillation_loss", "r1"});
  // Diffusion2GAN reads its pairs from a store of the same teacher, 96 rows for 16 a step.
  record_full(teacher, dir / "store", 96);
  const std::vector<std::string> one_step(small.begin() + 1, small.end());
  expect_resume_equals_straight(diffusion2gan_mixture_run(dir, "d2gan-straight", teacher, dir / "store", 6, one_step),
                                diffusion2gan_mixture_run(dir, "d2gan-resumed", teacher, dir / "store", 6, one_step), 6, with_ema,
                                {"step", "discriminator_loss", "generator_adversarial_loss", "regression_loss", "r1", "fd_raw"});
  for (const char* run : {"ladd-resumed", "add-resumed", "d2gan-resumed"}) {
    const auto last = dir / run / "checkpoints/step-0000006";
    const auto heads = load_tensor_file(last / "discriminator_heads.safetensors").tensors;
    std::set<std::string> covered;
    for (const auto& [key, tensor] : load_tensor_file(last / "discriminator_optimizer.safetensors").tensors) {
      const auto parameter = key.substr(0, key.rfind('.'));
      EXPECT_TRUE(heads.count(parameter)) << run << ": " << key;
      covered.insert(parameter);
    }
    EXPECT_EQ(covered.size(), heads.size()) << run;
  }
}

TEST(Ladd, NeedsANetworkTeacherAndTapsItHas) {
  const auto dir = testing::scratch_dir();
  std::ofstream(dir / "three_modes.yaml") << testing::kThreeModes2d;
  auto run = ladd_mixture_run(dir, "run", "gmm:" + (dir / "three_modes.yaml").string(), 2);
  testing::expect_error_mentioning<Error>([&] { run_distillation(run.options, run.teacher); }, {"has no network to read"});
  run = ladd_mixture_run(dir, "run2", untrained_mixture_teacher(dir), 2, {"adversarial.taps=[layer.0, bottleneck]"});
  testing::expect_error_mentioning<Error>([&] { run_distillation(run.options, run.teacher); },
                                          {"no feature tap 'bottleneck'", "adversarial.taps"});
}

// LADD has no distillation loss of its own, as in its paper; ladd.distill_weight adds ADD's.
// Class-conditional heads need classes to condition on, which the mixture's student lacks.
TEST(Ladd, ScoreDistillationOnlyWhenWeightedAndClassHeadsOnlyWithClasses) {
  const auto dir = testing::scratch_dir();
  const auto teacher = untrained_mixture_teacher(dir);
  const std::vector<std::string> small = {"train.batch=16", "log.every=1", "eval.every=0"};
  auto plain = ladd_mixture_run(dir, "plain", teacher, 2, small);
  run_distillation(plain.options, plain.teacher);
  auto weighted_overrides = small;
  weighted_overrides.push_back("ladd.distill_weight=1");
  auto weighted = ladd_mixture_run(dir, "weighted", teacher, 2, weighted_overrides);
  run_distillation(weighted.options, weighted.teacher);
  for (const auto& line : stats_lines(plain.options.out_dir)) EXPECT_FALSE(line.contains("score_distillation_loss")) << line.dump();
  for (const auto& line : stats_lines(weighted.options.out_dir)) EXPECT_GT(line.value("score_distillation_loss", 0.0), 0.0) << line.dump();
  const auto student = [](const MixtureRun& run) { return load_tensor_file(run.options.out_dir / "student.safetensors").tensors; };
  EXPECT_FALSE(torch::equal(student(plain).at("output.weight"), student(weighted).at("output.weight")));

  auto conditional_overrides = small;
  conditional_overrides.push_back("adversarial.class_conditional=true");
  auto conditional = ladd_mixture_run(dir, "conditional", teacher, 2, conditional_overrides);
  // The mixture student has no classes for class-conditional heads.
  testing::expect_error_mentioning<Error>([&] { run_distillation(conditional.options, conditional.teacher); },
                                          {"adversarial.class_conditional"});
}

// Noise-conditional heads are told the σ the teacher read each side's rows at: the reader's own
// draw, the same for the same step and side, another for the other side. A discriminator of
// clean images has no σ to give, which the config's key is named for.
TEST(Ladd, NoiseConditionalHeadsAreToldTheSigmaTheTeacherReadEachRowAt) {
  torch::manual_seed(2);
  NetworkDenoiser teacher(MLPConfig{.shape = {2}, .hidden = 16, .layers = 2, .num_classes = 0}, {.sigma_data = 1.5});
  const auto features = noised_teacher_features(teacher, {teacher.feature_tap("layer.1")}, -1.0, 1.0);
  ASSERT_TRUE(features.noise_level);
  StepContext context;
  context.batch = 6;
  context.seed = 7;
  context.step = 3;
  const auto x = torch::randn({6, 2});
  const auto sigma = features.noise_level(context, true, 6, x.options());
  ASSERT_EQ(sigma.sizes(), (std::vector<int64_t>{6}));
  EXPECT_TRUE(torch::equal(sigma, lognormal_sigmas(7, noise_stream::ladd_real_sigma, context.positions(), -1.0, 1.0, x.options())));
  EXPECT_FALSE(torch::allclose(sigma, features.noise_level(context, false, 6, x.options())));
  const auto noise = per_sample_normal(7, noise_stream::ladd_real_noise, context.positions(), {2}, x.options());
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(features.read(x, {}, {}, context, true).at("layer.1"),
                           teacher.features(x + sigma.view({-1, 1}) * noise, sigma, {}, {"layer.1"}).at("layer.1")));
  testing::expect_error_mentioning<Error>([&] { features.noise_level(context, true, 5, x.options()); }, {"6 rows", "5"});

  const auto dir = testing::scratch_dir();
  auto add = add_image_run(dir, "add", 1, {"adversarial.noise_conditional=true"});
  testing::expect_error_mentioning<Error>([&] { run_distillation(add.options, add.teacher); }, {"adversarial.noise_conditional", "clean"});
}

TEST(Diffusion2Gan, OneStepStudentOfTheMixtureBeatsTheOneStepTeacherInSlicedWasserstein) {
  const auto dir = testing::scratch_dir();
  const auto teacher_dir = mixture_network_teacher(dir, 800);
  record_full(teacher_dir, dir / "store", 4096);
  const auto run = diffusion2gan_mixture_run(dir, "run", teacher_dir, dir / "store", 400);
  run_distillation(run.options, run.teacher);
  const auto [teacher_sw, student_sw] = one_step_sliced_wasserstein(teacher_dir, run.options.out_dir / "student.safetensors");
  std::printf("sliced W2 to the mixture: teacher 1 step %.4f, Diffusion2GAN student 1 step %.4f\n", teacher_sw, student_sw);
  // Measured: 1.139 and 0.249; the bound is the LADD test's.
  EXPECT_LT(student_sw, teacher_sw / 2);
  EXPECT_TRUE(stats_lines(run.options.out_dir).back().contains("regression_loss"));
  // The ensembled distance augments images; the mixture's points are not.
  const auto points = diffusion2gan_mixture_run(dir, "points", teacher_dir, dir / "store", 1, {"diffusion2gan.ensemble=true"});
  testing::expect_error_mentioning<Error>([&] { run_distillation(points.options, points.teacher); }, {"the ensembled distance augments images", "[2]"});
}

TEST(Diffusion2Gan, TheDiscriminatorSeesEachImageWithItsNoise) {
  torch::manual_seed(2);
  NetworkDenoiser teacher(MLPConfig{.shape = {2}, .hidden = 16, .layers = 2, .num_classes = 0}, {.sigma_data = 1.5});
  const auto features = diffusion2gan_pair_features(teacher, {teacher.feature_tap("layer.1")}, 0.1, 80.0);
  ASSERT_EQ(features.taps.size(), 1u);
  EXPECT_EQ(features.taps[0].shape, (std::vector<int64_t>{32}));
  StepContext context;
  const auto x = torch::randn({5, 2}), z = torch::randn({5, 2});
  const auto paired = features.read(x, {}, z, context, true).at("layer.1");
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(paired.slice(1, 0, 16), teacher.features(x, torch::full({5}, 0.1), {}, {"layer.1"}).at("layer.1")));
  EXPECT_TRUE(torch::equal(paired.slice(1, 16), teacher.features(80.0 * z, torch::full({5}, 80.0), {}, {"layer.1"}).at("layer.1")));
  EXPECT_THROW(features.read(x, {}, {}, context, true), Error);
}

// The classifier backbone pairs the same way: its features of the image, which carry the
// generator's gradient to the image, stacked with its features of the noise.
TEST(Diffusion2Gan, TheClassifierDiscriminatorSeesEachImageWithItsNoise) {
  const auto classifier_file = testing::kSourceDir / "assets/eval/fmnist-second-classifier.safetensors";
  const auto config = Config::parse(distillation_schema("diffusion2gan"),
                                    fmt::format("method: diffusion2gan\nadversarial: {{taps: [conv2, features]}}\ndiffusion2gan: {{features: classifier, classifier: \"{}\"}}\n",
                                                classifier_file.string()),
                                    "d2g.yaml");
  const auto features = diffusion2gan_classifier_pair_features(config, torch::kCPU);
  auto classifier = load_domain_classifier(classifier_file);
  const auto alone = classifier->feature_taps();
  ASSERT_EQ(features.taps.size(), 2u);
  for (const auto& tap : features.taps) {
    const auto same = std::find_if(alone.begin(), alone.end(), [&](const FeatureTap& t) { return t.name == tap.name; });
    ASSERT_NE(same, alone.end());
    EXPECT_EQ(tap.shape[0], 2 * same->shape[0]) << tap.name;
  }
  torch::manual_seed(4);
  const auto x = torch::rand({3, 1, 28, 28}).mul(2).sub(1).requires_grad_(true), z = torch::randn({3, 1, 28, 28});
  const auto paired = features.read(x, {}, z, StepContext{}, false);
  const auto width = paired.at("features").size(1) / 2;
  paired.at("features").slice(1, 0, width).sum().backward();
  EXPECT_TRUE(x.grad().defined() && x.grad().abs().sum().item<double>() > 0);
  torch::NoGradGuard no_grad;
  const auto of_image = classifier->features_at(x, {"conv2", "features"}), of_noise = classifier->features_at(z, {"conv2", "features"});
  for (const auto& name : {"conv2", "features"}) {
    const auto half = paired.at(name).size(1) / 2;
    EXPECT_TRUE(torch::allclose(paired.at(name).slice(1, 0, half), of_image.at(name))) << name;
    EXPECT_TRUE(torch::allclose(paired.at(name).slice(1, half), of_noise.at(name))) << name;
  }
  EXPECT_THROW(features.read(x, {}, {}, StepContext{}, true), Error);
}

// The ensembled distance's augmentation against a pixel-by-pixel reading of its definition, at
// an odd size in two channels: brightness, contrast about the image's mean, a whole-pixel shift
// with zeros shifted in, and a zeroed square of half the side.
TEST(Diffusion2Gan, TheEnsembledDistanceAugmentsBothImagesAlikeAsDiffAugmentDefinesIt) {
  const int64_t h = 16, w = 20;
  const std::vector<int64_t> positions = {10, 11, 12, 13, 14};
  const auto draws = draw_paired_augmentations(3, noise_stream::diffusion2gan_augmentation, positions, h, w);
  torch::manual_seed(5);
  const auto a = torch::randn({5, 2, h, w}, torch::kFloat64).requires_grad_(true), b = torch::randn({5, 2, h, w}, torch::kFloat64);
  const auto [augmented_a, augmented_b] = augment_alike(a, b, draws);
  const auto reference = [&](const at::Tensor& images) {
    auto out = torch::zeros_like(images);
    for (int64_t n = 0; n < 5; ++n) {
      const auto& d = draws[static_cast<size_t>(n)];
      auto z = images[n].detach() + d.brightness;
      z = (z - z.mean()) * d.contrast + z.mean();
      for (int64_t i = 0; i < h; ++i)
        for (int64_t j = 0; j < w; ++j) {
          const int64_t si = i - d.shift_y, sj = j - d.shift_x;
          const bool cut = i >= d.cutout_y - 4 && i < d.cutout_y + 4 && j >= d.cutout_x - 5 && j < d.cutout_x + 5;  // 8 × 10
          if (si >= 0 && si < h && sj >= 0 && sj < w && !cut) out.index_put_({n, torch::indexing::Slice(), i, j}, z.index({torch::indexing::Slice(), si, sj}));
        }
    }
    return out;
  };
  EXPECT_TRUE(torch::allclose(augmented_a.detach(), reference(a), 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(augmented_b, reference(b), 1e-12, 1e-12));
  // Differentiable: the gradient reaches every pixel that stays in view.
  augmented_a.sum().backward();
  EXPECT_GT(a.grad().ne(0).sum().item<int64_t>(), 0);
  // Keyed by position: a batch of two rows draws what the batch of five drew for them.
  const auto some = draw_paired_augmentations(3, noise_stream::diffusion2gan_augmentation, {12, 13}, h, w);
  for (size_t r = 0; r < 2; ++r) {
    EXPECT_EQ(some[r].shift_y, draws[r + 2].shift_y);
    EXPECT_EQ(some[r].cutout_x, draws[r + 2].cutout_x);
    EXPECT_EQ(some[r].contrast, draws[r + 2].contrast);
  }
  // Over many rows every shift in ±⌊size/8 + ½⌋ and every cutout centre in [0, size] is drawn.
  std::vector<int64_t> many(2000);
  std::iota(many.begin(), many.end(), 0);
  std::set<int64_t> shifts_y, shifts_x, centres_y, centres_x;
  for (const auto& d : draw_paired_augmentations(7, noise_stream::diffusion2gan_augmentation, many, h, w)) {
    shifts_y.insert(d.shift_y), shifts_x.insert(d.shift_x), centres_y.insert(d.cutout_y), centres_x.insert(d.cutout_x);
    EXPECT_TRUE(d.brightness >= -0.5 && d.brightness < 0.5 && d.contrast >= 0.5 && d.contrast < 1.5);
  }
  EXPECT_EQ(shifts_y, (std::set<int64_t>{-2, -1, 0, 1, 2}));
  EXPECT_EQ(shifts_x, (std::set<int64_t>{-3, -2, -1, 0, 1, 2, 3}));
  EXPECT_EQ(*centres_y.begin(), 0);
  EXPECT_EQ(*centres_y.rbegin(), h);
  EXPECT_EQ(centres_y.size(), static_cast<size_t>(h + 1));
  EXPECT_EQ(centres_x.size(), static_cast<size_t>(w + 1));
}

}  // namespace
}  // namespace distillery
