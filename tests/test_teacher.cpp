// Trained teachers: the Fashion-MNIST reader, the UNet and its weights files, and EDM
// training's exact resume and EMA.
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <zlib.h>

#include <fmt/format.h>

#include <fstream>
#include <numeric>
#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/error.h"
#include "data/augment.h"
#include "data/fashion_mnist.h"
#include "data/image_folder.h"
#include "data/shuffled_order.h"
#include "io/image.h"
#include "io/tensor_file.h"
#include "models/keyed_dropout.h"
#include "models/mlp.h"
#include "models/precond.h"
#include "models/network_denoiser.h"
#include "samplers/sampling.h"
#include "teachers/edm_loss.h"
#include "teachers/gaussian_mixture.h"
#include "models/weights.h"
#include "teachers/teacher.h"
#include "teacher_training/teacher_training.h"
#include "test_support.h"

namespace distillery {
namespace {

TEST(FashionMnist, BothSplitsHaveTheirSizesAndBalancedLabels) {
  const auto train = load_fashion_mnist("train");
  const auto test = load_fashion_mnist("test");
  EXPECT_EQ(train.images.sizes(), (std::vector<int64_t>{60000, 1, 28, 28}));
  EXPECT_EQ(test.images.sizes(), (std::vector<int64_t>{10000, 1, 28, 28}));
  EXPECT_TRUE(torch::equal(torch::bincount(train.labels), torch::full({10}, 6000, torch::kInt64)));
  EXPECT_TRUE(torch::equal(torch::bincount(test.labels), torch::full({10}, 1000, torch::kInt64)));
  // Known statistic of the training set: mean pixel ≈ 72.94 of 255 (0.2860).
  EXPECT_NEAR(train.images.to(torch::kFloat64).mean().item<double>() / 255.0, 0.2860, 0.0005);
  const auto x = to_model_range(train.images.narrow(0, 0, 8));
  EXPECT_GE(x.min().item<float>(), -1.0f);
  EXPECT_LE(x.max().item<float>(), 1.0f);
}

void write_bytes(const std::filesystem::path& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::vector<uint8_t> idx(uint32_t magic, std::vector<uint32_t> dims, size_t payload) {
  std::vector<uint8_t> out;
  auto be = [&](uint32_t v) { for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<uint8_t>(v >> s)); };
  be(magic);
  for (auto d : dims) be(d);
  out.resize(out.size() + payload, 3);
  return out;
}

std::string dataset_error(const std::vector<uint8_t>& images, const std::vector<uint8_t>& labels) {
  const auto dir = testing::scratch_dir();
  write_bytes(dir / "images", images);
  write_bytes(dir / "labels", labels);
  try {
    read_idx_dataset(dir / "images", dir / "labels");
  } catch (const Error& e) {
    return e.what();
  }
  return "(accepted)";
}

TEST(FashionMnist, MalformedFilesGetSpecificErrors) {
  const auto labels = idx(0x801, {2}, 2);
  EXPECT_EQ(dataset_error(idx(0x803, {2, 4, 4}, 32), labels), "(accepted)");
  EXPECT_NE(dataset_error(idx(0x802, {2, 4, 4}, 32), labels).find("wrong IDX magic number"), std::string::npos);
  EXPECT_NE(dataset_error(idx(0x803, {2, 4, 4}, 20), labels).find("IDX file is truncated\n"), std::string::npos);
  EXPECT_NE(dataset_error(idx(0x803, {2, 4, 4}, 40), labels).find("trailing bytes"), std::string::npos);
  EXPECT_NE(dataset_error({0, 0, 8}, labels).find("truncated inside its header"), std::string::npos);
  EXPECT_NE(dataset_error(idx(0x803, {2, 4, 4}, 32), idx(0x801, {3}, 3)).find("image and label counts differ"), std::string::npos);
  // The hint names the package.
  testing::expect_error_mentioning<Error>([] { read_idx_dataset("/nonexistent/images.gz", "/nonexistent/labels.gz"); },
                                          {"dataset-fashion-mnist"});
}

UNetConfig tiny_unet(int64_t classes) {
  UNetConfig c;
  c.model_channels = 8;
  c.channel_mult = {1, 2};
  c.blocks_per_level = 1;
  c.attn_resolutions = {14};
  c.channels_per_head = 8;
  c.num_classes = classes;
  return c;
}

TEST(UNet, ShapesLabelsAndDeterminismInEval) {
  torch::manual_seed(0);
  NetworkDenoiser D(tiny_unet(10));
  D.module().eval();
  const auto x = torch::randn({3, 1, 28, 28});
  const auto sigma = torch::tensor({0.1f, 1.0f, 10.0f});
  const auto labels = torch::tensor({0, 9, -1}, torch::kInt64);
  const auto out = D.denoise(x, sigma, labels);
  EXPECT_EQ(out.sizes(), x.sizes());
  EXPECT_TRUE(torch::equal(out, D.denoise(x, sigma, labels))) << "eval mode is deterministic";
  EXPECT_FALSE(torch::allclose(out[0], D.denoise(x, sigma, torch::tensor({5, 9, -1}, torch::kInt64))[0])) << "labels condition the output";
  EXPECT_THROW(D.denoise(x, sigma, {}), Error);
  // c_skip → 1 as σ → 0: the denoiser leaves an almost clean image almost unchanged.
  const auto nearly_clean = D.denoise(x, torch::full({3}, 1e-4f), labels);
  EXPECT_LT((nearly_clean - x).abs().max().item<float>(), 1e-2);
}

TEST(UNet, WeightsFileRoundTripAndMismatches) {
  const auto dir = testing::scratch_dir();
  torch::manual_seed(1);
  NetworkDenoiser D(tiny_unet(10));
  D.module().eval();
  D.save(dir / "d.safetensors");
  const auto loaded = NetworkDenoiser::load(dir / "d.safetensors");
  const auto x = torch::randn({2, 1, 28, 28});
  const auto s = torch::tensor({0.3f, 3.0f});
  const auto l = torch::tensor({1, 2}, torch::kInt64);
  EXPECT_TRUE(torch::equal(D.denoise(x, s, l), loaded->denoise(x, s, l)));
  EXPECT_EQ(loaded->num_classes(), 10);

  // The sample command accepts the file as a teacher.
  EXPECT_EQ(load_teacher((dir / "d.safetensors").string(), torch::kCPU)->sample_shape(), (std::vector<int64_t>{1, 28, 28}));

  auto tensors = module_tensors(D.module());
  std::map<std::string, at::Tensor> by_name(tensors.begin(), tensors.end());
  by_name.erase("conv_in.weight");
  NetworkDenoiser other(tiny_unet(10));
  testing::expect_error_mentioning<Error>([&] { load_module_tensors(other.module(), by_name, "w.safetensors"); },
                                          {"lacks tensor 'conv_in.weight'"});
  by_name["conv_in.weight"] = torch::zeros({3, 3});
  testing::expect_error_mentioning<Error>([&] { load_module_tensors(other.module(), by_name, "w.safetensors"); },
                                          {"tensor 'conv_in.weight' in w.safetensors has the wrong shape"});
  by_name["conv_in.weight"] = module_tensors(D.module()).front().second;
  by_name["extra.weight"] = torch::zeros({1});
  EXPECT_THROW(load_module_tensors(other.module(), by_name, "w.safetensors"), Error);

  save_tensor_file(dir / "plain.safetensors", {{"a", torch::zeros({1})}});
  testing::expect_error_mentioning<Error>([&] { NetworkDenoiser::load(dir / "plain.safetensors"); }, {"not a distillery denoiser file"});
}

// A few steps of a tiny model, with every artefact written each step.
TrainingRunOptions tiny_run(const std::filesystem::path& out, int64_t steps, bool resume) {
  TrainingRunOptions o;
  o.config_file = testing::kSourceDir / "configs/teacher/fmnist.yaml";
  o.out_dir = out;
  o.resume = resume;
  o.overrides = {"model.model_channels=8", "model.channel_mult=[1, 2]", "model.blocks_per_level=1", "model.attn_resolutions=[14]",
                 "model.channels_per_head=8", "train.batch=6", "train.warmup_steps=2", "train.steps=" + std::to_string(steps),
                 "train.ema_halflife_images=20", "log.every=1", "checkpoint.every=1", "checkpoint.keep=10", "grid.every=0", "grid.num=4"};
  return o;
}

TEST(TeacherTraining, StopAndResumeEqualsUninterruptedBitForBit) {
  const auto dir = testing::scratch_dir();
  train_teacher(tiny_run(dir / "straight", 6, false));
  train_teacher(tiny_run(dir / "resumed", 3, false));
  // What a kill leaves behind: a torn stats line and a half-written checkpoint directory.
  std::ofstream(dir / "resumed/stats.jsonl", std::ios::app) << "{\"step\": 4, \"lo";
  std::filesystem::create_directories(dir / "resumed/checkpoints/.step-0000004.tmp.999");
  train_teacher(tiny_run(dir / "resumed", 6, true));
  EXPECT_FALSE(std::filesystem::exists(dir / "resumed/checkpoints/.step-0000004.tmp.999"));
  for (const char* file : {"model.safetensors", "ema.safetensors", "model_optimizer.safetensors"})
    EXPECT_EQ(testing::file_bytes(dir / "straight/checkpoints/step-0000006" / file), testing::file_bytes(dir / "resumed/checkpoints/step-0000006" / file)) << file;
  EXPECT_EQ(testing::file_bytes(dir / "straight/teacher.safetensors"), testing::file_bytes(dir / "resumed/teacher.safetensors"));
  // Losses logged after the resume equal the uninterrupted run's.
  std::ifstream a(dir / "straight/stats.jsonl"), b(dir / "resumed/stats.jsonl");
  int lines = 0;
  for (std::string la, lb; std::getline(a, la) && std::getline(b, lb); ++lines)
    EXPECT_EQ(nlohmann::json::parse(la)["loss"], nlohmann::json::parse(lb)["loss"]) << "line " << lines;
  EXPECT_EQ(lines, 6);
}

TEST(TeacherTraining, EmaFollowsItsHalfLife) {
  const auto dir = testing::scratch_dir();
  train_teacher(tiny_run(dir, 3, false));
  // β = 0.5^(batch / half-life) = 0.5^(6/20); ema_k = β·ema_{k−1} + (1−β)·model_k.
  const double beta = std::pow(0.5, 6.0 / 20.0);
  const auto ema2 = load_tensor_file(dir / "checkpoints/step-0000002/ema.safetensors");
  const auto ema3 = load_tensor_file(dir / "checkpoints/step-0000003/ema.safetensors");
  const auto model3 = load_tensor_file(dir / "checkpoints/step-0000003/model.safetensors");
  double worst = 0;
  for (const auto& [name, value] : ema3.tensors)
    worst = std::max(worst, (value - (beta * ema2.get(name) + (1 - beta) * model3.get(name))).abs().max().item<double>());
  EXPECT_LT(worst, 1e-6);
  // The shipped file is the final EMA.
  const auto shipped = load_tensor_file(dir / "teacher.safetensors");
  for (const auto& [name, value] : ema3.tensors) EXPECT_TRUE(torch::equal(value, shipped.get(name))) << name;
}

TEST(TeacherTraining, ExistingRunNeedsResume) {
  const auto dir = testing::scratch_dir();
  train_teacher(tiny_run(dir, 1, false));
  testing::expect_error_mentioning<Error>([&] { train_teacher(tiny_run(dir, 2, false)); }, {"--resume"});
}

}  // namespace
}  // namespace distillery

namespace distillery {
namespace {

// Distance of the sample moments from the mixture's: ‖mean − μ‖ + ‖cov − Σ‖_F. A conditional
// model is sampled with the classes in the mixture's proportions (0.5, 0.3, 0.2).
double moment_error(GaussianMixtureDenoiser& target, Denoiser& model) {
  SampleRequest request;
  request.num = 2000;
  request.batch = 2000;
  request.steps = 32;
  request.seed = 11;
  request.labels = model.num_classes() > 0 ? "0,0,0,0,0,1,1,1,2,2" : "";
  const auto x = draw_samples(model, request).samples.to(torch::kFloat64);
  const auto centred = x - x.mean(0);
  const auto cov = centred.t().matmul(centred) / (x.size(0) - 1);
  return (x.mean(0) - target.spec().mean()).norm().item<double>() + (cov - target.spec().covariance()).norm().item<double>();
}

// The recipe a user would write for a 2-D toy teacher, trained through `teacher train`.
TrainingRunOptions mlp_run(const std::filesystem::path& dir, int64_t steps) {
  std::ofstream(dir / "three_modes.yaml") << testing::kThreeModes2d;
  std::ofstream(dir / "mlp.yaml") << fmt::format(R"(
data: {{dataset: gmm, path: "{}", size: 4096}}
model: {{kind: mlp, shape: [2], hidden: 64, layers: 2, num_classes: 3}}
precond: {{sigma_data: 1.5}}
train: {{batch: 256, steps: {}, lr: 3.0e-3, warmup_steps: 100, ema_halflife_images: 20000}}
log: {{every: 100}}
checkpoint: {{every: 500}}
grid: {{every: {}, num: 500, steps: 32}}
eval: {{every: {}, num: 1000, reference: "gmm:{}", features: raw}}
)", (dir / "three_modes.yaml").string(), steps, steps, steps, (dir / "three_modes.yaml").string());
  TrainingRunOptions o;
  o.config_file = dir / "mlp.yaml";
  o.out_dir = dir / "run";
  o.show_progress = false;
  return o;
}

TEST(MlpTeacher, TrainedFromAConfigItLearnsTheMixturesMoments) {
  const auto dir = testing::scratch_dir();
  GaussianMixtureDenoiser mixture(GaussianMixtureSpec::parse(testing::kThreeModes2d, "three_modes.yaml"));
  torch::manual_seed(0);
  NetworkDenoiser untrained(MLPConfig{.shape = {2}, .hidden = 64, .layers = 2, .num_classes = 3}, {.sigma_data = 1.5});
  untrained.module().eval();
  train_teacher(mlp_run(dir, 1500));
  const auto teacher = load_teacher((dir / "run").string(), torch::kCPU);
  EXPECT_EQ(teacher->sample_shape(), (std::vector<int64_t>{2}));
  EXPECT_EQ(teacher->num_classes(), 3);
  torch::NoGradGuard no_grad;
  const double before = moment_error(mixture, untrained), after = moment_error(mixture, *teacher);
  std::printf("moment error: untrained %.3f, after 1500 steps %.3f\n", before, after);
  // The mixture's covariance has Frobenius norm ≈ 3.6; an untrained network is far off.
  EXPECT_GT(before, 1.0);
  EXPECT_LT(after, 0.35);
  // Conditioning on a component pulls samples to its mean (label dropout kept the unconditional branch too).
  SampleRequest request;
  request.num = 500;
  request.steps = 32;
  request.labels = "2";
  const auto mean = draw_samples(*teacher, request).samples.to(torch::kFloat64).mean(0);
  EXPECT_LT((mean - torch::tensor({1.0, -2.0}, torch::kFloat64)).norm().item<double>(), 0.2) << mean;
  // The shared trainer's in-loop evaluation: FD of the EMA's samples (Heun 32) to the mixture's
  // exact moments; the untrained network's samples already have about the right scale.
  std::ifstream stats(dir / "run/stats.jsonl");
  std::vector<double> fd;
  for (std::string line; std::getline(stats, line);)
    if (const auto entry = nlohmann::json::parse(line); entry.contains("fd_raw")) fd.push_back(entry["fd_raw"].get<double>());
  ASSERT_EQ(fd.size(), 2u);
  std::printf("in-loop FD to the mixture: step 0 %.3f, step 1500 %.3f\n", fd[0], fd[1]);
  EXPECT_LT(fd[1], fd[0] / 5);  // measured: 3.10 → 0.37
  // The 2-D run draws scatter plots instead of image grids.
  EXPECT_TRUE(std::filesystem::exists(dir / "run/grids/grid-step-0001500.png"));
}

TEST(MlpTeacher, KeysOfTheOtherNetworkAreRejected) {
  const auto dir = testing::scratch_dir();
  auto options = mlp_run(dir, 1);
  options.overrides = {"model.channel_mult=[1, 2]"};
  testing::expect_error_mentioning<Error>([&] { train_teacher(options); }, {"'model.channel_mult' does not apply to model.kind mlp"});
  options.overrides = {"model.shape=[3]"};
  options.out_dir = dir / "wrong-shape";
  testing::expect_error_mentioning<Error>([&] { train_teacher(options); }, {"the model does not fit the data"});
}

// Label dropout is the training step's, by sample position: a network in training mode takes
// its labels as they come, and a row whose label the step dropped (−1) gets the unconditional
// output.
class TrainingModeLabels : public ::testing::TestWithParam<std::string> {};

TEST_P(TrainingModeLabels, ANetworkInTrainingModeNeverDropsALabelItself) {
  torch::manual_seed(0);
  auto unet = tiny_unet(10);
  unet.dropout = 0;  // nothing else random in training mode
  unet.label_dropout = 0.5;
  const auto D = GetParam() == "unet" ? std::make_unique<NetworkDenoiser>(unet)
                                      : std::make_unique<NetworkDenoiser>(MLPConfig{.shape = {1, 4, 4}, .num_classes = 10, .label_dropout = 0.5});
  const int64_t n = 64;
  std::vector<int64_t> shape = {n};
  for (auto d : D->sample_shape()) shape.push_back(d);
  const auto x = torch::randn(shape);
  const auto sigma = torch::full({n}, 1.0f);
  const auto labels = torch::randint(0, 10, {n}, torch::kInt64);
  std::vector<int64_t> positions(static_cast<size_t>(n));
  std::iota(positions.begin(), positions.end(), int64_t{100});
  const auto dropped_labels = drop_labels_per_sample(labels, 0.5, 3, 7, positions);
  torch::NoGradGuard no_grad;
  D->module().eval();
  const auto conditional = D->denoise(x, sigma, labels), unconditional = D->denoise(x, sigma, torch::full({n}, -1, torch::kInt64));
  D->module().train();
  EXPECT_TRUE(torch::allclose(D->denoise(x, sigma, labels), conditional, 0, 1e-6));
  const auto trained = D->denoise(x, sigma, dropped_labels);
  const auto dropped = dropped_labels.eq(-1).view({n, 1}).expand({n, x[0].numel()}).reshape(shape);
  EXPECT_TRUE(torch::allclose(trained, torch::where(dropped, unconditional, conditional), 0, 1e-6));
}

INSTANTIATE_TEST_SUITE_P(Networks, TrainingModeLabels, ::testing::Values("unet", "mlp"));

// Whatever the batch a row falls in, its draws are the same: two halves drawn apart equal the
// whole batch drawn at once.
TEST(Augment, LabelDropoutDropsItsShareByPosition) {
  const int64_t n = 1000;
  const auto labels = torch::randint(0, 10, {n}, torch::kInt64);
  std::vector<int64_t> positions(static_cast<size_t>(n)), first(positions.begin(), positions.begin()), second;
  std::iota(positions.begin(), positions.end(), int64_t{5000});
  first.assign(positions.begin(), positions.begin() + 300);
  second.assign(positions.begin() + 300, positions.end());
  const auto whole = drop_labels_per_sample(labels, 0.25, 9, 1002, positions);
  EXPECT_TRUE(torch::equal(whole, torch::cat({drop_labels_per_sample(labels.slice(0, 0, 300), 0.25, 9, 1002, first),
                                               drop_labels_per_sample(labels.slice(0, 300), 0.25, 9, 1002, second)})));
  const auto dropped = whole.eq(-1);
  EXPECT_TRUE(torch::equal(torch::where(dropped, labels, whole), labels)) << "a kept label is unchanged";
  const double share = dropped.to(torch::kFloat64).mean().item<double>();
  EXPECT_GT(share, 0.25 - 4 * 0.0137);  // Binomial(1000, ¼): ±4σ
  EXPECT_LT(share, 0.25 + 4 * 0.0137);
  EXPECT_TRUE(torch::equal(drop_labels_per_sample(labels, 0, 9, 1002, positions), labels));
  EXPECT_FALSE(torch::equal(drop_labels_per_sample(labels, 0.25, 10, 1002, positions), whole)) << "another seed, other rows";
  EXPECT_THROW(drop_labels_per_sample(labels, 0.25, 9, 1002, first), Error);
}

TEST(Augment, HorizontalFlipMirrorsAboutHalfOfTheImagesByPosition) {
  torch::manual_seed(4);
  const auto images = torch::randn({1000, 1, 3, 5});
  std::vector<int64_t> positions(1000);
  std::iota(positions.begin(), positions.end(), int64_t{0});
  const auto out = hflip_per_sample(images, 1, 1003, positions);
  const auto same = out.eq(images).reshape({1000, -1}).all(1), mirrored = out.eq(images.flip({3})).reshape({1000, -1}).all(1);
  EXPECT_TRUE(same.logical_xor(mirrored).all().item<bool>()) << "each image is kept or mirrored whole";
  const double share = mirrored.to(torch::kFloat64).mean().item<double>();
  EXPECT_GT(share, 0.44);  // Binomial(1000, ½): ±4σ
  EXPECT_LT(share, 0.56);
  const std::vector<int64_t> tail(positions.begin() + 600, positions.end());
  EXPECT_TRUE(torch::equal(hflip_per_sample(images.slice(0, 600), 1, 1003, tail), out.slice(0, 600)));
  EXPECT_THROW(hflip_per_sample(torch::zeros({4, 2}), 1, 1003, {0, 1, 2, 3}), Error);
  EXPECT_THROW(hflip_per_sample(images, 1, 1003, tail), Error);
}

// Dropout masks are keyed by sample position and by the layer's place in the pass.
TEST(KeyedDropout, MasksFollowSamplePositionsAndLayersNotTheBatch) {
  const double p = 0.3;
  const auto x = torch::ones({8, 3, 16, 16});
  std::vector<int64_t> positions(8);
  std::iota(positions.begin(), positions.end(), int64_t{40});
  at::Tensor whole, second_layer;
  {
    const DropoutKeys keys(11, 1100, positions);
    whole = keyed_dropout(x, p, true);
    second_layer = keyed_dropout(x, p, true);
  }
  at::Tensor front, back;
  {
    const DropoutKeys keys(11, 1100, {positions.begin(), positions.begin() + 3});
    front = keyed_dropout(x.slice(0, 0, 3), p, true);
  }
  {
    const DropoutKeys keys(11, 1100, {positions.begin() + 3, positions.end()});
    back = keyed_dropout(x.slice(0, 3), p, true);
  }
  EXPECT_TRUE(torch::equal(torch::cat({front, back}), whole));
  EXPECT_FALSE(torch::equal(second_layer, whole)) << "each layer of a pass has its own masks";
  const auto kept = whole.ne(0);
  EXPECT_TRUE(torch::allclose(whole.masked_select(kept), torch::full({}, 1 / (1 - p)))) << "kept elements scaled by 1/(1 − p)";
  const double share = 1 - kept.to(torch::kFloat64).mean().item<double>();
  EXPECT_NEAR(share, p, 4 * std::sqrt(p * (1 - p) / static_cast<double>(x.numel())));
  // Without training it is the identity; in training it needs the step's positions.
  EXPECT_TRUE(keyed_dropout(x, p, false).is_same(x));
  EXPECT_THROW(keyed_dropout(x, p, true), Error);
  {
    const DropoutKeys keys(11, 1100, positions);
    EXPECT_THROW(keyed_dropout(x.slice(0, 1), p, true), Error) << "a batch of another size than the step's";
  }
}

// A UNet trained with dropout computes each row as if that row were alone in its batch.
TEST(KeyedDropout, ATrainingUNetSplitOverTwoBatchesEqualsOneBatch) {
  torch::manual_seed(2);
  auto config = tiny_unet(10);
  config.dropout = 0.2;
  NetworkDenoiser D(config);
  D.module().train();
  const auto x = torch::randn({6, 1, 28, 28});
  const auto sigma = torch::linspace(0.1, 5, 6);
  const auto labels = torch::arange(6, torch::kInt64);
  std::vector<int64_t> positions = {7, 3, 90, 12, 5, 61};
  torch::NoGradGuard no_grad;
  const auto run = [&](int64_t begin, int64_t end) {
    const DropoutKeys keys(5, 1100, {positions.begin() + begin, positions.begin() + end});
    return D.denoise(x.slice(0, begin, end), sigma.slice(0, begin, end), labels.slice(0, begin, end));
  };
  const auto whole = run(0, 6);
  EXPECT_TRUE(torch::allclose(torch::cat({run(0, 2), run(2, 6)}), whole, 1e-5, 1e-6));
  D.module().eval();
  EXPECT_GT((D.denoise(x, sigma, labels) - whole).abs().max().item<double>(), 1e-3) << "the masks change the output";
}

TEST(ShuffledOrderTest, EveryEpochIsAPermutationFixedBySeedAndEpoch) {
  ShuffledOrder order(50, 7), again(50, 7), other_seed(50, 8);
  std::vector<int64_t> epoch0, epoch1;
  for (int64_t p = 0; p < 50; ++p) epoch0.push_back(order.at(p));
  for (int64_t p = 50; p < 100; ++p) epoch1.push_back(order.at(p));
  auto sorted0 = epoch0, sorted1 = epoch1;
  std::sort(sorted0.begin(), sorted0.end());
  std::sort(sorted1.begin(), sorted1.end());
  std::vector<int64_t> identity(50);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_EQ(sorted0, identity);
  EXPECT_EQ(sorted1, identity);
  EXPECT_NE(epoch0, epoch1) << "epochs are shuffled afresh";
  // Random access: looking up epoch 1 first gives the same order as streaming into it.
  for (int64_t p = 99; p >= 50; --p) EXPECT_EQ(again.at(p), epoch1[static_cast<size_t>(p - 50)]);
  int64_t differences = 0;
  for (int64_t p = 0; p < 50; ++p) differences += other_seed.at(p) != epoch0[static_cast<size_t>(p)];
  EXPECT_GT(differences, 40);
}

}  // namespace
}  // namespace distillery

namespace distillery {
namespace {

// Writes one image (uint8 values) as a PNG through the grid writer (a 1-image grid is the image).
void write_png(const std::filesystem::path& path, const at::Tensor& uint8_chw) {
  std::filesystem::create_directories(path.parent_path());
  write_image_grid(path, (uint8_chw.unsqueeze(0).to(torch::kFloat32) - 127.5f) / 127.5f, 1);
}

TEST(ImageFolder, ReadsImagesInPathOrderWithDatasetJsonLabels) {
  const auto dir = testing::scratch_dir();
  const auto a = torch::randint(0, 256, {1, 8, 6}, torch::kUInt8), b = torch::randint(0, 256, {1, 8, 6}, torch::kUInt8);
  write_png(dir / "00001/img1.png", b);
  write_png(dir / "00000/img0.png", a);
  std::ofstream(dir / "dataset.json") << R"({"labels": [["00000/img0.png", 4], ["00001/img1.png", 7]]})";
  const auto data = read_image_folder(dir);
  EXPECT_EQ(data.images.sizes(), (std::vector<int64_t>{2, 1, 8, 6}));
  EXPECT_TRUE(torch::equal(data.images[0], a));
  EXPECT_TRUE(torch::equal(data.images[1], b));
  EXPECT_TRUE(torch::equal(data.labels, torch::tensor({4, 7}, torch::kInt64)));
  // One colour image makes the folder colour, in RGB order; the grey images before and after
  // it repeat their channel.
  const auto colour = torch::randint(0, 256, {3, 8, 6}, torch::kUInt8);
  write_png(dir / "00000/img0b.png", colour);
  std::ofstream(dir / "dataset.json") << R"({"labels": [["00000/img0.png", 4], ["00000/img0b.png", 5], ["00001/img1.png", 7]]})";
  const auto rgb = read_image_folder(dir);
  ASSERT_EQ(rgb.images.sizes(), (std::vector<int64_t>{3, 3, 8, 6}));
  EXPECT_TRUE(torch::equal(rgb.images[0], a.expand({3, -1, -1})));
  EXPECT_TRUE(torch::equal(rgb.images[1], colour));
  EXPECT_TRUE(torch::equal(rgb.images[2], b.expand({3, -1, -1})));
}

TEST(ImageFolder, TeacherTrainingReadsAFolder) {
  const auto dir = testing::scratch_dir();
  std::string labels = R"({"labels": [)";
  for (int i = 0; i < 8; ++i) {
    write_png(dir / "data" / fmt::format("img{}.png", i), torch::randint(0, 256, {1, 28, 28}, torch::kUInt8));
    labels += fmt::format(R"({}["img{}.png", {}])", i ? ", " : "", i, i % 10);
  }
  std::ofstream(dir / "data/dataset.json") << labels << "]}";
  auto options = tiny_run(dir / "run", 2, false);
  options.overrides.push_back("data.dataset=folder");
  options.overrides.push_back("data.path=" + (dir / "data").string());
  train_teacher(options);
  EXPECT_TRUE(std::filesystem::exists(dir / "run/teacher.safetensors"));
  options.overrides.push_back("model.num_classes=5");
  options.out_dir = dir / "too-few-classes";
  EXPECT_THROW(train_teacher(options), Error);
  // Grey images are not converted for a colour model, nor colour ones for a grey model.
  options.overrides.back() = "model.in_channels=3";
  options.overrides.push_back("model.out_channels=3");
  options.out_dir = dir / "colour-model";
  testing::expect_error_mentioning<Error>([&] { train_teacher(options); }, {"the images have 1 channel, the model takes 3"});
}

// A valid 16-bit grey PNG, written by hand (the project's writers make 8-bit ones only).
void write_grey16_png(const std::filesystem::path& path, uint32_t width, uint32_t height) {
  std::ofstream out(path, std::ios::binary);
  const auto be32 = [](uint32_t v) { return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)}; };
  const auto chunk = [&](const char* type, const std::string& data) {
    const std::string body = std::string(type, 4) + data;
    out << be32(static_cast<uint32_t>(data.size())) << body
        << be32(static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size()))));
  };
  out << "\x89PNG\r\n\x1a\n";
  chunk("IHDR", be32(width) + be32(height) + std::string{16, 0, 0, 0, 0});  // 16 bits, grey, deflate, no filter, no interlace
  const std::string rows = [&] {
    std::string raw;
    for (uint32_t y = 0; y < height; ++y) raw += std::string(1, '\0') + std::string(2 * width, '\x03');  // filter 0, samples 0x0303
    uLongf size = compressBound(static_cast<uLong>(raw.size()));
    std::string packed(size, '\0');
    compress(reinterpret_cast<Bytef*>(packed.data()), &size, reinterpret_cast<const Bytef*>(raw.data()), static_cast<uLong>(raw.size()));
    packed.resize(size);
    return packed;
  }();
  chunk("IDAT", rows);
  chunk("IEND", "");
}

std::string folder_error(const std::filesystem::path& dir) {
  try {
    read_image_folder(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "(accepted)";
}

TEST(ImageFolder, ProblemsAreNamed) {
  const auto dir = testing::scratch_dir();
  EXPECT_NE(folder_error(dir).find("holds no PNG or JPEG"), std::string::npos);
  write_png(dir / "a.png", torch::zeros({1, 8, 6}, torch::kUInt8));
  write_png(dir / "b.png", torch::zeros({1, 4, 4}, torch::kUInt8));
  EXPECT_NE(folder_error(dir).find("must all have one size"), std::string::npos);
  std::filesystem::remove(dir / "b.png");
  std::ofstream(dir / "dataset.json") << R"({"labels": [["other.png", 1]]})";
  EXPECT_NE(folder_error(dir).find("labels 'other.png', which is not an image in the folder"), std::string::npos);
  write_png(dir / "b.png", torch::zeros({1, 8, 6}, torch::kUInt8));
  std::ofstream(dir / "dataset.json") << R"({"labels": [["a.png", 1]]})";
  EXPECT_NE(folder_error(dir).find("no label for 'b.png'"), std::string::npos);
  std::filesystem::remove(dir / "b.png");
  std::ofstream(dir / "dataset.json") << R"({"labels": [["a.png", 1], ["a.png", 2]]})";
  EXPECT_NE(folder_error(dir).find("'a.png' is labelled more than once"), std::string::npos);
  std::ofstream(dir / "dataset.json") << R"({"labels": [["a.png", "shirt"]]})";
  EXPECT_NE(folder_error(dir).find("is not [path, non-negative class]"), std::string::npos);
  std::filesystem::remove(dir / "dataset.json");
  std::ofstream(dir / "c.png") << "not a png";
  EXPECT_NE(folder_error(dir).find("cannot decode image"), std::string::npos);
  std::filesystem::remove(dir / "c.png");
  write_grey16_png(dir / "d.png", 6, 8);
  EXPECT_NE(folder_error(dir).find("only 8-bit images are read"), std::string::npos);
  std::filesystem::remove(dir / "d.png");
  // Headers declaring more pixels than any dataset holds are refused before decoding: a valid
  // IHDR of 60000 × 60000 and an empty IDAT.
  const std::string huge_png(
      "\x89PNG\r\n\x1a\n"
      "\0\0\0\x0d" "IHDR\0\0\xea\x60\0\0\xea\x60\x08\0\0\0\0" "\xa5\xb9\x2a\x9e"
      "\0\0\0\x08" "IDAT\x78\x9c\x03\0\0\0\0\x01" "\x48\x06\x89\xd2",
      53);
  std::ofstream(dir / "e.png", std::ios::binary) << huge_png;
  EXPECT_NE(folder_error(dir).find("the image is too large\n  file: " + (dir / "e.png").string() +
                                   "\n  expected: at most 67108864 pixels (8192 × 8192)\n  got: 60000 × 60000 in its header"),
            std::string::npos)
      << folder_error(dir);
  std::filesystem::remove(dir / "e.png");
  // A JPEG: a baseline start of frame of height 40000, width 50000, and a start of scan.
  const std::string huge_jpeg(
      "\xff\xd8"
      "\xff\xc0\x00\x11\x08\x9c\x40\xc3\x50\x03\x01\x11\x00\x02\x11\x01\x03\x11\x01"
      "\xff\xda\x00\x0c\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00"
      "\xff\xd9",
      37);
  std::ofstream(dir / "f.jpg", std::ios::binary) << huge_jpeg;
  EXPECT_NE(folder_error(dir).find("got: 50000 × 40000 in its header"), std::string::npos) << folder_error(dir);
}

}  // namespace
}  // namespace distillery
