// DMD2: its one-step student of the analytic mixture, its distribution-matching gradient in
// closed form, the GAN heads on the critic's taps, another device, and its exact resume.
#include "distill_runs.h"

namespace distillery {
namespace {

TEST(Dmd2, OneStepStudentOfTheMixtureCutsItsFrechetDistanceFivefold) {
  const auto dir = testing::scratch_dir();
  auto run = mixture_run(dir, "run", 300);
  run_distillation(run.options, run.teacher);
  const auto lines = stats_lines(run.options.out_dir);
  const double before = lines.front().at("fd_raw"), after = lines.back().at("fd_raw");
  std::printf("FD (raw, vs the mixture's moments): step 0 %.4f, step 300 %.4f\n", before, after);
  EXPECT_EQ(lines.front().at("step"), 0);
  EXPECT_EQ(lines.back().at("eval_nfe"), 1);
  EXPECT_LT(after, before / 5);
  // The student file generates in one step from the saved σ grid.
  const auto metadata = load_tensor_file(run.options.out_dir / "student.safetensors").metadata;
  EXPECT_EQ(metadata.at("student_sampler"), "multistep");
  EXPECT_EQ(nlohmann::json::parse(metadata.at("student_sigmas")), nlohmann::json::array({80.0}));
}

TEST(Dmd2, DistributionMatchingGradientEqualsItsClosedFormForGaussians) {
  // Real data N(μr, sr²·I), the generator's N(μf, sf²·I): both denoisers are exact,
  // D(x_t; σ) = μ + s²/(s² + σ²)·(x_t − μ).
  const auto spec = [](double mean_x, double mean_y, double std) {
    return GaussianMixtureSpec::parse(fmt::format("dim: 2\nweights: [1]\nmeans: [[{}, {}]]\nstds: [{}]\n", mean_x, mean_y, std), "gaussian");
  };
  GaussianMixtureDenoiser real(spec(1.0, -0.5, 0.7)), fake(spec(-0.3, 0.4, 1.3));
  torch::manual_seed(3);
  const auto x = torch::randn({16, 2}, torch::kFloat64).requires_grad_(true);
  const auto sigma = torch::rand({16}, torch::kFloat64) * 5 + 0.05;
  const auto noisy = x.detach() + sigma.unsqueeze(1) * torch::randn({16, 2}, torch::kFloat64);
  const auto loss = distribution_matching_loss(x, real.denoise(noisy, sigma, {}), fake.denoise(noisy, sigma, {}));
  loss.backward();

  const auto closed = [&](double mx, double my, double s) {
    const auto mean = torch::tensor({mx, my}, torch::kFloat64);
    return mean + (s * s / (s * s + sigma.square())).unsqueeze(1) * (noisy - mean);
  };
  const auto d_real = closed(1.0, -0.5, 0.7), d_fake = closed(-0.3, 0.4, 1.3);
  const auto direction = (d_fake - d_real) / (x.detach() - d_real).abs().mean(1, true);
  const auto expected_gradient = direction / static_cast<double>(x.numel());
  EXPECT_LT((x.grad() - expected_gradient).abs().max().item<double>(), 1e-12 * expected_gradient.abs().max().item<double>() + 1e-15);
  EXPECT_NEAR(loss.item<double>(), 0.5 * direction.square().mean().item<double>(), 1e-12);
  // Descending the loss moves x towards the real denoiser's estimate and away from the fake's.
  EXPECT_GT(((d_real - d_fake) * -x.grad()).sum().item<double>(), 0);
}

// The heads on the critic's bottleneck (DMD2's choice, the default) and on three taps at once.
class Dmd2GanTaps : public ::testing::TestWithParam<std::string> {};

TEST_P(Dmd2GanTaps, HeadsLearnToTellRealImagesFromGeneratedOnes) {
  const auto dir = testing::scratch_dir();
  auto run = image_mixture_run(dir, "run", 40, {"dmd2.gan_taps=" + GetParam()});
  run_distillation(run.options, run.teacher);
  const auto lines = stats_lines(run.options.out_dir);
  const auto margin = [](const nlohmann::json& line) { return line.at("realism_real").get<double>() - line.at("realism_fake").get<double>(); };
  double late = 0;
  for (size_t i = lines.size() - 5; i < lines.size(); ++i) late += margin(lines[i]) / 5;
  std::printf("GAN heads on %s: P(real) − P(fake) at step 1 %.3f, mean of the last 5 steps %.3f\n", GetParam().c_str(), margin(lines.front()), late);
  // The first step's average (over its critic updates, from the initial heads) barely tells
  // them apart; after training the heads separate them, through the critic's features of
  // noised images. Heads left out of the critic's optimiser stay near the first value.
  EXPECT_LT(std::abs(margin(lines.front())), 0.2);
  EXPECT_GT(late, 0.35);
  EXPECT_TRUE(lines.back().contains("gan_generator_loss"));
  const auto heads = load_tensor_file(run.options.out_dir / "checkpoints/step-0000040/gan_heads.safetensors");
  const auto taps = nlohmann::json::parse(GetParam()).size();
  EXPECT_TRUE(heads.tensors.count(fmt::format("{}.0.weight", taps - 1)));
  EXPECT_FALSE(heads.tensors.count(fmt::format("{}.0.weight", taps)));
}

INSTANTIATE_TEST_SUITE_P(Taps, Dmd2GanTaps, ::testing::Values(R"(["bottleneck"])", R"(["enc.1", "bottleneck", "dec.2"])"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.index == 0 ? "Bottleneck" : "EncoderBottleneckDecoder"; });

// Device-follow (foreign_device.h) for a distillation: DMD2 with the GAN head, its real data
// and the regression loss on a store recorded on the device, stopped and resumed there, ends
// with the CPU run's student to rounding (foreign_device.h says why not bit for bit).
TEST(Distill, Dmd2OnAnotherDeviceMatchesTheCpuRunAndResumesThere) {
  const auto dir = testing::scratch_dir();
  const auto foreign = testing::foreign_device();
  const auto mixes_before = testing::foreign_device_mixes().count;
  auto cpu = image_mixture_run(dir, "cpu", 4);
  RecordOptions store;
  store.teacher = cpu.teacher;
  store.out = dir / "store";
  store.request.num = 32;
  store.request.steps = 3;
  store.request.labels = "all";
  store.show_progress = false;
  store.device = foreign;
  record_trajectories(store);
  const std::vector<std::string> regression = {"dmd2.regression_weight=0.25", "dmd2.regression_store=" + store.out.string()};
  cpu.options.overrides = regression;
  run_distillation(cpu.options, cpu.teacher);
  for (const auto& [steps, resume] : {std::pair{2, false}, std::pair{4, true}}) {
    auto there = image_mixture_run(dir, "foreign", steps, regression);
    there.options.runtime.device = foreign;
    there.options.resume = resume;
    run_distillation(there.options, there.teacher);
  }
  for (const char* file : {"student.safetensors", "checkpoints/step-0000004/gan_heads.safetensors"})
    EXPECT_LT(testing::max_tensor_file_difference(dir / "cpu" / file, dir / "foreign" / file), 1e-4) << file;
  const auto mixes = testing::foreign_device_mixes();
  EXPECT_EQ(mixes.count, mixes_before) << "an operation mixed the devices (the first in this process: " << mixes.first << ")";
}

TEST(Distill, RealImagesFromDataMustFitAndBeLabelledForAConditionalCritic) {
  const auto dir = testing::scratch_dir();
  const auto run = image_mixture_run(dir, "recipe", 2);
  const auto images = [&](const std::string& name, int64_t side) {
    std::filesystem::create_directories(dir / name);
    for (int i = 0; i < 4; ++i) write_image_grid(dir / name / fmt::format("{}.png", i), torch::rand({1, 1, side, side}) * 2 - 1, 1);
    return dir / name;
  };
  int attempt = 0;
  const auto distill = [&](const std::filesystem::path& data) {
    return testing::run_command(fmt::format("{} distill --config {} --teacher {} --data {} --out {}", testing::kCli,
                                            testing::shell_quoted(run.options.config_file), testing::shell_quoted(run.teacher),
                                            testing::shell_quoted(data), testing::shell_quoted(dir / fmt::format("out{}", ++attempt))));
  };
  const auto unlabelled = images("unlabelled", 8);
  auto result = distill(unlabelled);
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("needs every real image labelled"), std::string::npos) << result.output;
  std::ofstream(unlabelled / "dataset.json") << R"({"labels": [["0.png", 0], ["1.png", 1], ["2.png", 0], ["3.png", 1]]})";
  result = distill(unlabelled);
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_TRUE(std::filesystem::exists(dir / "out2/checkpoints/step-0000002/gan_heads.safetensors"));
  result = distill(images("large", 16));
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("do not have the student's shape"), std::string::npos) << result.output;
  result = distill(dir / "absent");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("absent"), std::string::npos) << result.output;
}

TEST(Trainer, StopAndResumeEqualsUninterruptedBitForBit) {
  const auto dir = testing::scratch_dir();
  // A two-step student: backward simulation and the multistep sampler's fresh noise included.
  const std::vector<std::string> two_steps = {"student.sigmas=[80.0, 1.0]", "model.hidden=32", "dmd2.critic_steps=2", "train.batch=16",
                                              "train.ema_halflife_images=50", "eval.every=3", "eval.num=200"};
  expect_resume_equals_straight(mixture_run(dir, "straight", 6, two_steps), mixture_run(dir, "resumed", 6, two_steps), 6,
                                {"generator.safetensors", "critic.safetensors", "generator_optimizer.safetensors", "critic_optimizer.safetensors",
                                 "ema.safetensors", "state.json"},
                                {"step", "dm_loss", "critic_loss", "fd_raw"});
}

TEST(Trainer, StopAndResumeWithTheGanHeadEqualsUninterruptedBitForBit) {
  const auto dir = testing::scratch_dir();
  // Real images are reshuffled per epoch (512 images, 16 per draw, 3 draws per step): the
  // resumed half starts in the middle of the stream.
  expect_resume_equals_straight(image_mixture_run(dir, "straight", 6, {"data.hflip=true"}), image_mixture_run(dir, "resumed", 6, {"data.hflip=true"}), 6,
                                {"generator.safetensors", "critic.safetensors", "gan_heads.safetensors", "generator_optimizer.safetensors",
                                 "critic_optimizer.safetensors", "state.json"},
                                {"step", "dm_loss", "critic_loss", "gan_critic_loss", "gan_generator_loss", "realism_real"});
}

// A run may start its student from another run's file: the generator then holds the file's
// weights, and the critic, which must begin as the real score, the teacher's. Here the file
// is a wider network than the teacher, so a critic copied from the generator would not even
// have the teacher's shapes.
TEST(Dmd2, AStudentFileStartsTheGeneratorAndTheTeacherStartsTheCritic) {
  const auto dir = testing::scratch_dir();
  const auto teacher = untrained_mixture_teacher(dir);
  torch::manual_seed(2);
  NetworkDenoiser(MLPConfig{.shape = {2}, .hidden = 48, .layers = 2, .num_classes = 0}, {.sigma_data = 1.5}).save(dir / "student.safetensors");
  const auto recipe = [&](const std::string& init) {
    return Config::parse(distillation_schema("dmd2"), fmt::format("method: dmd2\nstudent: {{init: \"{}\"}}\n", init), "dmd2.yaml");
  };
  const auto expect_weights_of = [](NetworkDenoiser& network, const std::filesystem::path& file) {
    const auto tensors = load_tensor_file(file).tensors;
    const auto held = module_tensors(network.module());
    ASSERT_EQ(held.size(), tensors.size()) << file;
    for (const auto& [name, tensor] : held) EXPECT_TRUE(torch::equal(tensor, tensors.at(name))) << name << " of " << file;
  };
  auto training = make_dmd2_training(recipe((dir / "student.safetensors").string()), teacher, torch::kCPU);
  expect_weights_of(*training->generator(), dir / "student.safetensors");
  expect_weights_of(training->critic(), teacher);

  for (const auto& [init, message] : std::vector<std::pair<std::string, std::string>>{
           {"teachers", "teacher, scratch, or a network file"}, {(dir / "absent.safetensors").string(), "absent.safetensors"}}) {
    SCOPED_TRACE("student.init " + init);
    testing::expect_error_mentioning<Error>([&] { make_dmd2_training(recipe(init), teacher, torch::kCPU); }, {message});
  }
}

}  // namespace
}  // namespace distillery
