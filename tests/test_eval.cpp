// Evaluation: Fréchet distance equal to pytorch-fid's, .npz interchange with numpy, KID and
// precision/recall behaving as their definitions say, the shipped domain classifier's
// accuracy, its training on the shared loop (stopped and resumed bit for bit), and specific
// errors for bad inputs.
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/fashion_mnist.h"
#include "eval/domain_classifier.h"
#include "eval/evaluate.h"
#include "eval/feature_statistics.h"
#include "eval/image_source.h"
#include "eval/inception.h"
#include "eval/metrics.h"
#include "eval/npz.h"
#include "io/npy.h"
#include "io/tensor_file.h"
#include "models/network_denoiser.h"
#include "test_support.h"
#include "train/run_options.h"

namespace distillery {
namespace {

using testing::shell_quoted;

std::string reference(const std::string& args) {
  const auto result = testing::run_command(testing::kPython + " " + shell_quoted(testing::kSourceDir / "tests/python/fid_reference.py") + " " + args);
  EXPECT_EQ(result.exit_code, 0) << result.output;
  return testing::last_line(result.output);
}

FeatureStatistics statistics_of(const at::Tensor& features) {
  FeatureStatistics s;
  s.add(features);
  return s;
}

TEST(FrechetDistance, EqualsPytorchFidIncludingSingularCovariances) {
  if (!testing::python_available()) GTEST_SKIP() << "no project Python (run tools/bootstrap.sh)";
  const auto dir = testing::scratch_dir();
  torch::manual_seed(0);
  struct Case {
    std::string name;
    at::Tensor a, b;
  };
  const int64_t d = 64;
  const auto mixing = torch::randn({d, d}, torch::kFloat64) / 8;
  std::vector<Case> cases = {
      {"case-wellconditioned", torch::randn({2000, d}, torch::kFloat64).matmul(mixing), torch::randn({2000, d}, torch::kFloat64).matmul(mixing) * 1.3 + 0.2},
      // N < d: both covariances have rank 19 of 64.
      {"case-fewer-samples-than-dims", torch::randn({20, d}, torch::kFloat64), torch::randn({20, d}, torch::kFloat64) + 0.1},
      // Nearly singular: a direction with variance 1e-9.
      {"case-near-singular", torch::randn({500, d}, torch::kFloat64) * torch::cat({torch::full({1}, 3e-5, torch::kFloat64), torch::ones({d - 1}, torch::kFloat64)}),
       torch::randn({500, d}, torch::kFloat64)},
  };
  for (const auto& c : cases) {
    const auto sa = statistics_of(c.a), sb = statistics_of(c.b);
    write_npz(dir / (c.name + ".npz"), {{"mu1", sa.mean()}, {"sigma1", sa.covariance()}, {"mu2", sb.mean()}, {"sigma2", sb.covariance()}});
  }
  const auto expected = nlohmann::json::parse(reference("fd " + shell_quoted(dir)));
  for (const auto& c : cases) {
    const double ours = frechet_distance(statistics_of(c.a), statistics_of(c.b));
    const double theirs = expected.at(c.name + ".npz").get<double>();
    std::printf("%s: ours %.12g, pytorch-fid %.12g, relative difference %.2e\n", c.name.c_str(), ours, theirs, std::abs(ours - theirs) / theirs);
    EXPECT_LE(std::abs(ours - theirs) / theirs, 1e-6) << c.name;
  }
}

TEST(FrechetDistance, OfASetWithItselfIsZeroAndStreamingMatchesOneShot) {
  torch::manual_seed(1);
  const auto x = torch::randn({3000, 16}, torch::kFloat64) * 5 + 100;  // a large mean tests cancellation
  FeatureStatistics streamed;
  for (int64_t start = 0; start < 3000; start += 700) streamed.add(x.slice(0, start, start + 700));
  const auto centred = x - x.mean(0);
  EXPECT_TRUE(torch::allclose(streamed.covariance(), centred.t().matmul(centred) / 2999, 1e-12, 1e-10));
  EXPECT_TRUE(torch::allclose(streamed.mean(), x.mean(0), 1e-13, 1e-12));
  EXPECT_LT(std::abs(frechet_distance(streamed, statistics_of(x))), 1e-8);
}

TEST(KernelInceptionDistance, NearZeroForOneDistributionAndLargeForTwo) {
  torch::manual_seed(2);
  const auto a = torch::randn({1500, 32}), b = torch::randn({1500, 32}), c = torch::randn({1500, 32}) + 0.5;
  const auto same = kernel_inception_distance(a, b, 50, 500), different = kernel_inception_distance(a, c, 50, 500);
  std::printf("KID same %.5f ± %.5f, shifted %.5f ± %.5f\n", same.mean, same.std, different.mean, different.std);
  EXPECT_LT(std::abs(same.mean), 3 * same.std + 1e-9);
  EXPECT_GT(different.mean, 10 * different.std);
}

TEST(PrecisionRecall, CoverageOfIdenticalAndDisjointSets) {
  torch::manual_seed(3);
  const auto real = torch::randn({600, 8});
  const auto same = precision_recall(real, real.clone());
  EXPECT_DOUBLE_EQ(same.precision, 1.0);
  EXPECT_DOUBLE_EQ(same.recall, 1.0);
  const auto far = precision_recall(real, torch::randn({600, 8}) + 50);
  EXPECT_DOUBLE_EQ(far.precision, 0.0);
  EXPECT_DOUBLE_EQ(far.recall, 0.0);
  // A generator that covers one half of the real data: full precision, about half the recall.
  const auto half = precision_recall(real, real.index({real.select(1, 0) > 0}));
  EXPECT_GT(half.precision, 0.95);
  EXPECT_GT(half.recall, 0.4);
  EXPECT_LT(half.recall, 0.75);
}

TEST(Npz, RoundTripsWithNumpyBothWays) {
  if (!testing::python_available()) GTEST_SKIP() << "no project Python (run tools/bootstrap.sh)";
  const auto dir = testing::scratch_dir();
  const auto mu = torch::arange(5, torch::kFloat64), sigma = torch::eye(3, torch::kFloat64) * 2;
  write_npz(dir / "ours.npz", {{"mu", mu}, {"sigma", sigma}, {"n", torch::tensor({9}, torch::kInt64)}});
  const auto seen = nlohmann::json::parse(reference("npz-check " + shell_quoted(dir / "ours.npz")));
  EXPECT_EQ(seen["mu"]["shape"], nlohmann::json::array({5}));
  EXPECT_EQ(seen["mu"]["dtype"], "float64");
  EXPECT_DOUBLE_EQ(seen["mu"]["sum"].get<double>(), 10.0);
  EXPECT_EQ(seen["sigma"]["shape"], nlohmann::json::array({3, 3}));
  EXPECT_DOUBLE_EQ(seen["sigma"]["sum"].get<double>(), 6.0);
  EXPECT_EQ(seen["n"]["dtype"], "int64");

  const auto sums = nlohmann::json::parse(reference("npz-write " + shell_quoted(dir)));
  for (const char* file : {"stored.npz", "compressed.npz"}) {
    const auto arrays = read_npz(dir / file);
    EXPECT_EQ(arrays.size(), 5u) << file;
    for (const auto& [name, array] : arrays) EXPECT_NEAR(array.to(torch::kFloat64).sum().item<double>(), sums[name].get<double>(), 1e-9) << file << " " << name;
    EXPECT_EQ(arrays.at("pixels").scalar_type(), torch::kUInt8);
    EXPECT_EQ(arrays.at("f32").scalar_type(), torch::kFloat32);
  }
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(accepted)";
}

TEST(Npz, MalformedFilesAndMismatchesAreNamed) {
  const auto dir = testing::scratch_dir();
  std::ofstream(dir / "garbage.npz") << "this is not a zip archive";
  EXPECT_NE(error_of([&] { read_npz(dir / "garbage.npz"); }).find("not a readable .npz (zip) archive"), std::string::npos);
  EXPECT_NE(error_of([&] { read_npz(dir / "absent.npz"); }).find("file not found"), std::string::npos);
  write_npz(dir / "only-mu.npz", {{"mu", torch::zeros({4}, torch::kFloat64)}});
  EXPECT_NE(error_of([&] { FeatureStatistics::load(dir / "only-mu.npz"); }).find("no 'sigma' array"), std::string::npos);
  write_npz(dir / "stats.npz", {{"mu", torch::zeros({4}, torch::kFloat64)}, {"sigma", torch::eye(4, torch::kFloat64)}});
  EXPECT_NE(error_of([&] { FeatureStatistics::load(dir / "stats.npz", 256); }).find("computed with another feature network"), std::string::npos);
  write_npz(dir / "bad-shape.npz", {{"mu", torch::zeros({4}, torch::kFloat64)}, {"sigma", torch::eye(3, torch::kFloat64)}});
  EXPECT_NE(error_of([&] { FeatureStatistics::load(dir / "bad-shape.npz"); }).find("inconsistent shapes"), std::string::npos);
  EXPECT_NE(error_of([&] { write_npz(dir / "half.npz", {{"x", torch::zeros({4}, torch::kFloat16)}}); }).find("cannot store this tensor type"), std::string::npos);
}

// Statistics no set of features can have, and damaged bytes, are refused instead of giving a
// number; pytorch-fid's and EDM's layout (no count) is read.
TEST(Npz, DamagedFilesAndImpossibleStatisticsAreRefused) {
  const auto dir = testing::scratch_dir();
  torch::manual_seed(0);
  const auto features = torch::randn({50, 4}, torch::kFloat64);
  FeatureStatistics good;
  good.add(features);
  const auto mu = good.mean(), sigma = good.covariance();
  const auto load_error = [&](const std::string& name, const std::map<std::string, at::Tensor>& arrays) {
    write_npz(dir / name, arrays);
    return error_of([&] { FeatureStatistics::load(dir / name); });
  };
  // A flipped bit in the stored data: the archive opens, its CRC does not match.
  good.save(dir / "flipped.npz");
  std::string bytes;
  {
    std::ifstream in(dir / "flipped.npz", std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  // Inside the first member's values: after the magic, version, header length and header.
  const auto magic = bytes.find("\x93NUMPY");
  ASSERT_NE(magic, std::string::npos);
  ASSERT_EQ(bytes[magic + 6], '\x01');  // .npy version 1: a 2-byte header length
  const auto data = magic + 10 + static_cast<uint8_t>(bytes[magic + 8]) + 256 * static_cast<uint8_t>(bytes[magic + 9]) + 3;
  bytes[data] = static_cast<char>(bytes[data] ^ 0x10);
  std::ofstream(dir / "flipped.npz", std::ios::binary) << bytes;
  EXPECT_NE(error_of([&] { FeatureStatistics::load(dir / "flipped.npz"); }).find("fails its CRC check"), std::string::npos);
  // A member whose headers (local and central) claim 2 GB: refused before it is allocated.
  auto claims = bytes;
  for (const auto& [signature, offset] : {std::pair{std::string("PK\x03\x04"), 22}, std::pair{std::string("PK\x01\x02"), 24}}) {
    const auto header = claims.find(signature);
    ASSERT_NE(header, std::string::npos);
    claims.replace(header + static_cast<size_t>(offset), 4, std::string("\x00\x00\x00\x80", 4));
  }
  std::ofstream(dir / "claims.npz", std::ios::binary) << claims;
  EXPECT_NE(error_of([&] { FeatureStatistics::load(dir / "claims.npz"); }).find("declares more bytes than its data can hold"), std::string::npos)
      << error_of([&] { FeatureStatistics::load(dir / "claims.npz"); });
  auto infinite = mu.clone();
  infinite[1] = INFINITY;
  EXPECT_NE(load_error("inf.npz", {{"mu", infinite}, {"sigma", sigma}}).find("'mu' holds a non-finite value"), std::string::npos);
  auto asymmetric = sigma.clone();
  asymmetric[0][1] += 0.5;
  EXPECT_NE(load_error("asymmetric.npz", {{"mu", mu}, {"sigma", asymmetric}}).find("not symmetric"), std::string::npos);
  EXPECT_NE(load_error("negative.npz", {{"mu", mu}, {"sigma", -sigma}}).find("negative eigenvalue"), std::string::npos);
  EXPECT_NE(load_error("integer.npz", {{"mu", mu.to(torch::kInt64)}, {"sigma", sigma}}).find("not floating point"), std::string::npos);
  EXPECT_NE(load_error("one.npz", {{"mu", mu}, {"sigma", sigma}, {"count", torch::tensor({1}, torch::kInt64)}}).find("'count' must be"), std::string::npos);
  // pytorch-fid's and EDM's layout: mu and sigma alone, the count unknown.
  write_npz(dir / "plain.npz", {{"mu", mu}, {"sigma", sigma}});
  const auto plain = FeatureStatistics::load(dir / "plain.npz");
  EXPECT_FALSE(plain.count_known());
  EXPECT_TRUE(torch::equal(plain.mean(), mu));
  EXPECT_TRUE(torch::equal(plain.covariance(), sigma));
  EXPECT_NEAR(frechet_distance(plain, good), 0.0, 1e-9);
  FeatureStatistics more = plain;
  EXPECT_THROW(more.add(features), Error);
  good.save(dir / "ours.npz");
  EXPECT_EQ(FeatureStatistics::load(dir / "ours.npz").count(), 50);
  // Statistics of another network of the same width have the same shapes: only the
  // fingerprint they carry tells them apart. Files without one (pytorch-fid's) are taken.
  good.save(dir / "fingerprinted.npz", "network-a");
  EXPECT_EQ(FeatureStatistics::load(dir / "fingerprinted.npz", 0, "network-a").count(), 50);
  EXPECT_EQ(FeatureStatistics::load(dir / "ours.npz", 0, "network-b").count(), 50);
  const auto other = error_of([&] { FeatureStatistics::load(dir / "fingerprinted.npz", 0, "network-b"); });
  EXPECT_NE(other.find("computed with another feature network"), std::string::npos) << other;
  EXPECT_NE(other.find("fingerprint network-a"), std::string::npos) << other;
  EXPECT_NE(load_error("fingerprint-not-bytes.npz", {{"mu", mu}, {"sigma", sigma}, {"feature_network", mu}}).find("fingerprint as bytes"),
            std::string::npos);
}

TEST(Npy, PreamblesRoundTripAndMalformedOnesAreNamed) {
  for (const auto& shape : std::vector<std::vector<int64_t>>{{}, {3}, {2, 3}, {0, 5}}) {
    auto member = npy_preamble(NpyType::Float32, shape);
    EXPECT_EQ(member.size() % 64, 0u);
    int64_t count = 1;
    for (auto d : shape) count *= d;
    member.append(static_cast<size_t>(count) * 4, '\0');
    const auto layout = parse_npy(member, "round trip");
    EXPECT_EQ(layout.shape, shape);
    EXPECT_EQ(layout.type, NpyType::Float32);
    EXPECT_EQ(layout.data_offset + layout.data_bytes, member.size());
  }
  // A version-1 member with the given header dict and data length.
  const auto member = [](const std::string& dict, size_t data_bytes, char version = 1) {
    std::string out = "\x93NUMPY";
    out += version;
    out += '\0';
    out += static_cast<char>(dict.size() & 0xff);
    out += static_cast<char>(dict.size() >> 8);
    return out + dict + std::string(data_bytes, '\0');
  };
  const auto error = [](const std::string& bytes) { return error_of([&] { parse_npy(bytes, "member.npy"); }); };
  const std::string good = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }";
  EXPECT_NO_THROW(parse_npy(member(good, 48), "member.npy"));
  EXPECT_NE(error("\x93NUMPX\x01\0\0\0").find("no .npy magic"), std::string::npos);
  EXPECT_NE(error(member(good, 48, 4)).find("unsupported .npy version 4"), std::string::npos);
  EXPECT_NE(error(member(good, 48).substr(0, 40)).find("header runs past the end"), std::string::npos);
  EXPECT_NE(error(member(good, 47)).find("data size does not match the shape"), std::string::npos);
  EXPECT_NE(error(member("{'fortran_order': False, 'shape': (2,), }", 16)).find("header has no 'descr'"), std::string::npos);
  EXPECT_NE(error(member("{'descr': '>f8', 'fortran_order': False, 'shape': (2,), }", 16)).find("unsupported dtype '>f8'"), std::string::npos);
  EXPECT_NE(error(member("{'descr': '<f8', 'fortran_order': True, 'shape': (2,), }", 16)).find("Fortran-ordered"), std::string::npos);
  EXPECT_NE(error(member("{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,), }", 0)).find("other than sizes"), std::string::npos);
  EXPECT_NE(error(member("{'descr': '<f8', 'fortran_order': False, 'shape': (1048576, 1048576, 1048576), }", 0)).find("implausibly large"),
            std::string::npos);
  EXPECT_NE(error(member("{'descr': '<f8', 'fortran_order': False, 'shape': (2, x), }", 16)).find("other than sizes"), std::string::npos);
  EXPECT_NE(error(member("{'descr': '<f8', 'fortran_order': False, 'shape': (2 3), }", 48)).find("not a tuple of sizes"), std::string::npos);
  EXPECT_NE(error(member("{'descr': '<f8', 'fortran_order': False, 'shape': (2,", 16)).find("not closed"), std::string::npos);
}

TEST(ImageSources, EmptyOrUnknownSourcesAreNamed) {
  const auto dir = testing::scratch_dir();
  std::filesystem::create_directories(dir / "empty");
  EXPECT_NE(error_of([&] { open_image_source((dir / "empty").string(), {}, torch::kCPU); }).find("holds no PNG or JPEG"), std::string::npos);
  EXPECT_NE(error_of([&] { open_image_source("dataset:mnist", {}, torch::kCPU); }).find("unknown dataset"), std::string::npos);
  EXPECT_NE(error_of([&] { open_image_source((dir / "nothing").string(), {}, torch::kCPU); }).find("image source not found"), std::string::npos);
}

const auto kClassifier = testing::kSourceDir / "assets/eval/fmnist-classifier.safetensors";

// Shifting a set by m shifts every projection θ·x by θ·m, so the distance is exactly the root
// mean of (θ·m)² over the directions, ≈ |m|/√d; it ignores the order of the rows.
TEST(SlicedWasserstein, OfAShiftedSetIsTheShiftsRootMeanProjection) {
  torch::manual_seed(4);
  const auto a = torch::randn({500, 2}, torch::kFloat64);
  EXPECT_EQ(sliced_wasserstein_distance(a, a.flip(0)), 0);
  const auto shift = torch::tensor({0.6, -0.8}, torch::kFloat64);
  const double shifted = sliced_wasserstein_distance(a, a + shift, 1024);
  EXPECT_NEAR(shifted, 1 / std::sqrt(2.0), 0.05);
  // Another distribution with the same mean and covariance is closer than the shift, but not 0.
  const auto b = torch::rand({500, 2}, torch::kFloat64).sub(0.5).mul(std::sqrt(12.0));
  const double other = sliced_wasserstein_distance(a, b);
  EXPECT_GT(other, 0.02);
  EXPECT_LT(other, shifted);
  EXPECT_THROW(sliced_wasserstein_distance(a, a.slice(0, 0, 10)), Error);
}

// ADD's discriminator reads the classifier at named taps: the same features as its own pass.
TEST(DomainClassifierTest, FeatureTapsMatchTheFullPass) {
  auto classifier = load_domain_classifier(kClassifier);
  torch::manual_seed(2);
  const auto x = torch::rand({3, 1, 28, 28}) * 2 - 1;
  const auto taps = classifier->features_at(x, {"conv2", "features"});
  ASSERT_EQ(taps.size(), 2u);
  EXPECT_TRUE(torch::equal(taps.at("features"), classifier->features(x)));
  EXPECT_EQ(taps.at("conv2").sizes().vec(), (std::vector<int64_t>{3, 64, 7, 7}));
  for (const auto& tap : classifier->feature_taps())
    EXPECT_EQ(classifier->features_at(x, {tap.name}).at(tap.name).sizes().slice(1).vec(), tap.shape) << tap.name;
  EXPECT_NE(error_of([&] { classifier->features_at(x, {"pool"}); }).find("one of: conv1, conv2, conv3, features"), std::string::npos);
}

// The Fashion-MNIST test set through a classifier file: its features and its logits.
SourceEvaluation evaluate_on_the_test_set(const std::filesystem::path& classifier_file) {
  auto source = open_image_source("dataset:fmnist-test", {}, torch::kCPU);
  const auto evaluation = evaluate_source(*source, domain_feature_network(classifier_file, torch::kCPU), true, 500, false);
  std::printf("%s: test accuracy %.4f\n", classifier_file.filename().c_str(), classification_accuracy(evaluation.logits, evaluation.labels));
  return evaluation;
}

TEST(DomainClassifierTest, TheShippedClassifierIsAbove90PercentOnTheTestSet) {
  ASSERT_TRUE(std::filesystem::exists(kClassifier)) << kClassifier;
  auto classifier = load_domain_classifier(kClassifier);
  const auto evaluation = evaluate_on_the_test_set(kClassifier);
  EXPECT_GE(classification_accuracy(evaluation.logits, evaluation.labels), 0.90);
  // The shipped reference statistics are this set's features.
  const auto shipped = FeatureStatistics::load(testing::kSourceDir / "assets/eval/fmnist-test.npz", classifier->feature_dims());
  EXPECT_LT(std::abs(frechet_distance(shipped, evaluation.statistics)), 1e-4);
  // Train and test sets are close in these features; noise is far.
  const auto train = FeatureStatistics::load(testing::kSourceDir / "assets/eval/fmnist-train.npz", classifier->feature_dims());
  const double train_test = frechet_distance(train, evaluation.statistics);
  torch::manual_seed(0);
  const auto noise = classifier->features(torch::rand({2000, 1, 28, 28}) * 2 - 1).detach();
  const double noise_test = frechet_distance(statistics_of(noise), evaluation.statistics);
  std::printf("FD_fmnist train vs test %.3f, uniform noise vs test %.1f\n", train_test, noise_test);
  EXPECT_GT(noise_test, 50 * train_test);
  const auto dir = testing::scratch_dir();
  NetworkDenoiser(MLPConfig{}).save(dir / "denoiser.safetensors");
  EXPECT_NE(error_of([&] { load_domain_classifier(dir / "denoiser.safetensors"); }).find("not a distillery classifier file"), std::string::npos);
  // A width that is a float beyond int64 (whose cast would be undefined) or not positive.
  auto shipped_file = load_tensor_file(kClassifier);
  std::vector<std::pair<std::string, at::Tensor>> tensors(shipped_file.tensors.begin(), shipped_file.tensors.end());
  for (const char* width : {"8e21", "0", "2.5"}) {
    auto config = nlohmann::json::parse(shipped_file.metadata.at("config"));
    config["channels"] = nlohmann::json::parse(width);
    auto metadata = shipped_file.metadata;
    metadata["config"] = config.dump();
    save_tensor_file(dir / "classifier.safetensors", tensors, metadata);
    EXPECT_NE(error_of([&] { load_domain_classifier(dir / "classifier.safetensors"); }).find("positive integers channels, features and classes"),
              std::string::npos)
        << width;
  }
}

// The second classifier (another seed and width) is what CTM's shipped GAN recipe reads and
// what tools/fd_cross_check.sh measures FD with; it must be as good a classifier as the first.
TEST(DomainClassifierTest, TheShippedSecondClassifierIsAbove90PercentOnTheTestSet) {
  const auto second = testing::kSourceDir / "assets/eval/fmnist-second-classifier.safetensors";
  ASSERT_TRUE(std::filesystem::exists(second)) << second;
  const auto evaluation = evaluate_on_the_test_set(second);
  EXPECT_GE(classification_accuracy(evaluation.logits, evaluation.labels), 0.90);
}

// A tiny classifier on the shared trainer: killed after a checkpoint (what a kill leaves:
// later checkpoints and log lines gone, a torn line) and resumed, it ends with the
// uninterrupted run's file byte for byte, and it has learnt something.
TEST(DomainClassifierTraining, StopAndResumeEqualsUninterruptedBitForBit) {
  const auto dir = testing::scratch_dir();
  const auto options = [&](const std::string& name, bool resume) {
    TrainingRunOptions o;
    o.config_file = testing::kSourceDir / "configs/eval/fmnist_classifier.yaml";
    o.out_dir = dir / name;
    o.resume = resume;
    o.show_progress = false;
    o.overrides = {"model.channels=8", "model.features=16", "train.batch=64", "train.steps=40", "train.lr=5e-3", "model.dropout=0", "log.every=1", "checkpoint.every=1", "checkpoint.keep=30"};
    return o;
  };
  const double accuracy = train_domain_classifier(options("straight", false));
  std::printf("tiny classifier after 40 steps: test accuracy %.4f\n", accuracy);
  EXPECT_GT(accuracy, 0.4);  // chance is 0.1
  std::filesystem::copy(dir / "straight", dir / "killed", std::filesystem::copy_options::recursive);
  for (int step = 11; step <= 40; ++step) std::filesystem::remove_all(dir / fmt::format("killed/checkpoints/step-{:07d}", step));
  std::filesystem::remove(dir / "killed/classifier.safetensors");
  std::string log;
  {
    std::ifstream in(dir / "killed/stats.jsonl");
    std::string line;
    for (int i = 0; i < 10 && std::getline(in, line); ++i) log += line + "\n";
  }
  std::ofstream(dir / "killed/stats.jsonl") << log << "{\"step\": 11, \"lo";
  const double resumed = train_domain_classifier(options("killed", true));
  EXPECT_EQ(resumed, accuracy);
  const auto bytes = [](const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_EQ(bytes(dir / "straight/classifier.safetensors"), bytes(dir / "killed/classifier.safetensors"));
  EXPECT_EQ(bytes(dir / "straight/checkpoints/step-0000040/model_optimizer.safetensors"), bytes(dir / "killed/checkpoints/step-0000040/model_optimizer.safetensors"));
  const auto file = load_tensor_file(dir / "killed/classifier.safetensors");
  EXPECT_EQ(file.metadata.at("trained_steps"), "40");
  EXPECT_EQ(file.metadata.at("test_accuracy"), fmt::format("{:.4f}", accuracy));
  EXPECT_EQ(load_domain_classifier(dir / "killed/classifier.safetensors")->feature_dims(), 16);
  // No grids, evaluations or EMA: the keys of a generator's run do not apply.
  EXPECT_FALSE(std::filesystem::exists(dir / "straight/grids"));
  auto bad = options("bad", false);
  bad.overrides.push_back("grid.every=10");
  EXPECT_THROW(train_domain_classifier(bad), Error);
}

// Samples and labels from a file are checked where they enter: a wrong dtype, a NaN, a label
// count or value that does not fit gives an error naming the tensor, not an accuracy of 0.
TEST(EvalCommand, BadSamplesAndLabelsInAFileAreErrorsNotNumbers) {
  const auto dir = testing::scratch_dir();
  const auto samples = torch::rand({8, 1, 28, 28}) * 2 - 1;
  const auto labels = torch::arange(8, torch::kInt64);
  const auto accuracy = [&](const std::string& name, const at::Tensor& s, const at::Tensor& l) {
    save_tensor_file(dir / (name + ".safetensors"), {{"samples", s}, {"labels", l}});
    return testing::run_command(testing::kCli + " eval accuracy " + shell_quoted(dir / (name + ".safetensors")) + " --quiet --classifier " +
                                shell_quoted(kClassifier));
  };
  ASSERT_EQ(accuracy("good", samples, labels).exit_code, 0);
  auto with_nan = samples.clone();
  with_nan[3][0][5][5] = std::nan("");
  auto beyond = labels.clone();
  beyond[2] = 12;
  auto negative = labels.clone();
  negative[0] = -3;
  const struct {
    std::string name;
    at::Tensor samples, labels;
    std::string message;
  } cases[] = {
      {"integer", (samples * 127).to(torch::kInt64), labels, "error: 'samples' must be floating-point images in [-1, 1]"},
      {"nan", with_nan, labels, "error: 'samples' hold non-finite values"},
      {"float-labels", samples, labels.to(torch::kFloat32), "error: 'labels' must be one integer class per sample"},
      {"too-few-labels", samples, labels.slice(0, 0, 7), "expected: [8] integers (−1: no label)\n  got: [7] Long"},
      {"negative-label", samples, negative, "error: 'labels' hold a negative class"},
      {"label-beyond-classes", samples, beyond, "error: a label is beyond the classifier's classes\n  expected: labels from 0 to 9\n  got: 12"},
  };
  for (const auto& c : cases) {
    const auto result = accuracy(c.name, c.samples, c.labels);
    EXPECT_EQ(result.exit_code, 1) << c.name << ":\n" << result.output;
    EXPECT_NE(result.output.find(c.message), std::string::npos) << c.name << ":\n" << result.output;
  }
}

TEST(EvalCommand, FdBetweenADatasetAndItsStatisticsIsZero) {
  const auto result = testing::run_command(testing::kCli + " eval fd dataset:fmnist-test " + shell_quoted(testing::kSourceDir / "assets/eval/fmnist-test.npz") +
                                           " --quiet --classifier " + shell_quoted(kClassifier));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto report = nlohmann::json::parse(result.output.substr(result.output.find('{')));
  EXPECT_EQ(report["metric"], "fd");
  EXPECT_EQ(report["sources"][0]["n"], 10000);
  // Zero up to rounding: FD subtracts traces of about 10³, computed to ~1e-9 relative.
  EXPECT_LT(std::abs(report["value"].get<double>()), 1e-4);
  EXPECT_EQ(report["features"]["dims"], 256);
}

}  // namespace
}  // namespace distillery

namespace distillery {
namespace {

// `report` through files on disk: its teacher side is the store's samples and its student side
// the student's samples of the same seed, indices and classes, so each FD equals what `eval fd`
// gives for the store and for `generate`'s file, to the bit; the grids and the figures land.
TEST(ReportCommand, EachSideEqualsEvalFdOfTheSameSamples) {
  const auto dir = testing::scratch_dir();
  const auto teacher = shell_quoted(testing::kSourceDir / "assets/teachers/fmnist.safetensors");
  const auto student = shell_quoted(testing::kSourceDir / "assets/students/fmnist-dmd2.safetensors");
  const auto reference = shell_quoted(testing::kSourceDir / "assets/eval/fmnist-test.npz");
  const auto run = [](const std::string& arguments) {
    const auto result = testing::run_command(testing::kCli + " " + arguments);
    EXPECT_EQ(result.exit_code, 0) << arguments << ":\n" << result.output;
    return result.output;
  };
  run("record --teacher " + teacher + " --sampler heun --steps 4 --num 24 --labels all --seed 5 --store endpoints --out " + shell_quoted(dir / "store"));
  run("report --teacher " + teacher + " --student " + student + " --store " + shell_quoted(dir / "store") + " --out " + shell_quoted(dir / "report") +
      " --num 24 --speed-batch 8 --speed-rounds 1 --classifier " + shell_quoted(kClassifier) + " --reference " + reference);
  run("generate --model " + student + " --num 24 --seed 5 --labels all --out " + shell_quoted(dir / "student.safetensors"));
  const auto fd = [&](const std::filesystem::path& source) {
    const auto output = run("eval fd " + shell_quoted(source) + " " + reference + " --quiet --classifier " + shell_quoted(kClassifier));
    return nlohmann::json::parse(output.substr(output.find('{')))["value"].get<double>();
  };
  std::ifstream in(dir / "report/report.json");
  const auto report = nlohmann::json::parse(in);
  EXPECT_EQ(report["num"], 24);
  EXPECT_EQ(report["teacher"]["nfe"], 7);
  EXPECT_EQ(report["student"]["nfe"], 1);
  EXPECT_EQ(report["teacher"]["fd_fmnist"].get<double>(), fd(dir / "store"));
  EXPECT_EQ(report["student"]["fd_fmnist"].get<double>(), fd(dir / "student.safetensors"));
  EXPECT_GT(report["speedup"].get<double>(), 1) << "one evaluation against seven";
  for (const char* file : {"report.md", "comparison.png", "teacher.png", "student.png"}) EXPECT_TRUE(std::filesystem::exists(dir / "report" / file)) << file;

  // A student that cannot stand beside this store is refused by name before anything is sampled.
  MLPConfig unconditional;
  unconditional.shape = {1, 28, 28};
  unconditional.hidden = 8;
  unconditional.layers = 1;
  NetworkDenoiser(unconditional).save(dir / "unconditional.safetensors", {{"student_sampler", "multistep"}, {"student_sigmas", "[80.0]"}});
  const std::vector<std::pair<std::filesystem::path, std::string>> mismatched = {
      {dir / "unconditional.safetensors", "the student and the teacher's store differ in their classes"},
      {testing::kSourceDir / "tests/corpus/denoiser/valid.safetensors", "the student makes samples of another shape than the teacher's store"}};
  for (const auto& [other, message] : mismatched) {
    const auto result = testing::run_command(testing::kCli + " report --teacher " + teacher + " --student " + shell_quoted(other) + " --store " +
                                             shell_quoted(dir / "store") + " --out " + shell_quoted(dir / "refused") + " --num 24 --classifier " +
                                             shell_quoted(kClassifier) + " --reference " + reference);
    EXPECT_NE(result.exit_code, 0) << other;
    EXPECT_NE(result.output.find(message), std::string::npos) << result.output;
    EXPECT_NE(result.output.find("file: " + other.string()), std::string::npos) << result.output;
    EXPECT_EQ(result.output.find("--labels"), std::string::npos) << result.output;
  }
}

// Every shipped student, through the CLI: 200 one-step samples of cycling classes, scored by the
// Fashion-MNIST classifier. With 10,000 samples the lowest is PD's 86.5% (the teacher at 35 NFE:
// 85.3%); 200 samples have a standard error of about 2.4 points, so 80% sits 2.7 of them below,
// while a student that ignored its labels would score about 10%.
TEST(ShippedStudents, EachDrawsTheClassesAskedForThroughTheCli) {
  const auto dir = testing::scratch_dir();
  int students = 0;
  for (const auto& entry : std::filesystem::directory_iterator(testing::kSourceDir / "assets/students")) {
    if (entry.path().extension() != ".safetensors") continue;
    ++students;
    const auto samples = dir / (entry.path().stem().string() + ".safetensors");
    const auto generated = testing::run_command(testing::kCli + " generate --model " + shell_quoted(entry.path()) + " --num 200 --seed 11 --labels all --out " +
                                                shell_quoted(samples));
    ASSERT_EQ(generated.exit_code, 0) << entry.path() << ":\n" << generated.output;
    const auto scored = testing::run_command(testing::kCli + " eval accuracy " + shell_quoted(samples) + " --quiet --classifier " + shell_quoted(kClassifier));
    ASSERT_EQ(scored.exit_code, 0) << scored.output;
    const auto accuracy = nlohmann::json::parse(scored.output.substr(scored.output.find('{')))["value"].get<double>();
    std::printf("%s: class accuracy %.3f\n", entry.path().filename().c_str(), accuracy);
    EXPECT_GT(accuracy, 0.80) << entry.path();
  }
  EXPECT_GE(students, 5) << "DMD2, ADD, CTM, CTM with its GAN term and PD are shipped";
}

TEST(Inception, Pool3FeaturesMatchPytorchFidForEveryImageSize) {
  if (!testing::python_available()) GTEST_SKIP() << "no project Python (run tools/bootstrap.sh)";
  const auto dir = testing::scratch_dir();
  const auto result = testing::run_command(testing::kPython + " " + testing::shell_quoted(testing::kSourceDir / "tests/python/inception_reference.py") + " " +
                                           testing::shell_quoted(dir / "inception.safetensors") + " " + testing::shell_quoted(dir / "io.safetensors"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  auto net = load_inception(dir / "inception.safetensors");
  const auto io = load_tensor_file(dir / "io.safetensors");
  for (int size : {28, 32, 64, 299, 512}) {
    const auto ours = inception_features(net, io.get(fmt::format("images{}", size)));
    const auto theirs = io.get(fmt::format("features{}", size));
    const double error = ((ours - theirs).abs().max() / theirs.abs().max()).item<double>();
    std::printf("%d px: max relative difference %.2e (feature scale %.3f)\n", size, error, theirs.abs().max().item<double>());
    EXPECT_LE(error, 1e-4) << size << " px";
  }
}

// The user's path: image files on disk read as an image source, against pytorch-fid reading
// the same files through its ImagePathDataset (PIL, convert("RGB")). Grey, colour, alpha,
// palette and mixed folders, PNG and JPEG, 28 to 512 px; then FID through the CLI.
TEST(Inception, FeaturesOfImageFilesMatchPytorchFidReadingTheSameFiles) {
  if (!testing::python_available()) GTEST_SKIP() << "no project Python (run tools/bootstrap.sh)";
  const auto dir = testing::scratch_dir();
  const auto weights = dir / "inception.safetensors";
  const auto result = testing::run_command(testing::kPython + " " + testing::shell_quoted(testing::kSourceDir / "tests/python/inception_reference.py") +
                                           " --files " + testing::shell_quoted(weights) + " " + testing::shell_quoted(dir / "files"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto network = inception_feature_network(weights, torch::kCPU);
  const auto expected = load_tensor_file(dir / "files/features.safetensors");
  for (const auto& [folder, theirs] : expected.tensors) {
    auto source = open_image_source((dir / "files" / folder).string(), {}, torch::kCPU);
    ImageBatch batch;
    ASSERT_TRUE(source->next(100, batch));
    const bool grey = folder.starts_with("grey");
    EXPECT_EQ(batch.images.size(1), grey ? 1 : 3) << folder << ": grey files stay grey, any colour file makes the folder colour";
    const auto ours = network.features(batch.images);
    const double error = ((ours - theirs).abs().max() / theirs.abs().max()).item<double>();
    std::printf("%-10s %d×%d×%d: max relative difference %.2e\n", folder.c_str(), static_cast<int>(batch.images.size(1)), static_cast<int>(batch.images.size(2)),
                static_cast<int>(batch.images.size(3)), error);
    EXPECT_LE(error, 1e-4) << folder;
  }
  const auto fid = testing::run_command(testing::kCli + " eval fd " + shell_quoted(dir / "files/fid_a") + " " + shell_quoted(dir / "files/fid_b") +
                                        " --features inception --inception " + shell_quoted(weights) + " --quiet");
  ASSERT_EQ(fid.exit_code, 0) << fid.output;
  const double ours = nlohmann::json::parse(fid.output.substr(fid.output.find('{')))["value"].get<double>();
  std::ifstream reference_file(dir / "files/fid.json");
  const double theirs = nlohmann::json::parse(reference_file)["fid"].get<double>();
  std::printf("FID of two RGB PNG folders: ours %.6f, pytorch-fid %.6f\n", ours, theirs);
  EXPECT_LE(std::abs(ours - theirs) / theirs, 1e-4);
}

}  // namespace
}  // namespace distillery
