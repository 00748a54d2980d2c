// The published networks (EDM's DDPM++, NCSN++ and ADM, EDM2's UNet, DiT) against golden vectors
// made by their own code (tests/golden/published/, written by tools/reference/make_golden_vectors.py):
// ours in C++, the Python twins, and small EDM and DiT checkpoints converted by
// tools/convert_teacher.py and sampled through the CLI against the published samplers on the
// same noise.
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/error.h"
#include "io/tensor_file.h"
#include "models/network_denoiser.h"
#include "models/weights.h"
#include "tensor_checks.h"
#include "test_support.h"

namespace distillery {
namespace {

using testing::relative_difference;
using testing::shell_quoted;

const std::filesystem::path& golden_dir() {
  static const auto dir = testing::kSourceDir / "tests/golden/published";
  return dir;
}

const std::vector<std::string> kVectors = {"ddpmpp-cond-vp",     "ncsnpp-uncond-ve",   "songunet-skip-cond-edm", "adm-cond-edm",
                                           "edm2-cond",          "edm2-uncond-latent", "dit-cond-learn-sigma",   "dit-patch4-no-null-class"};

// The weights rule of tools/reference/golden_fill.py.
void golden_fill(torch::nn::Module& module) {
  auto tensors = module_tensors(module);
  // Fixed by the architecture: EDM's resampling filters and DiT's sin-cos positions.
  std::erase_if(tensors, [](const auto& named) { return named.first.ends_with("resample_filter") || named.first.ends_with("pos_embed"); });
  std::sort(tensors.begin(), tensors.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  torch::NoGradGuard no_grad;
  for (size_t k = 0; k < tensors.size(); ++k) {
    auto& [name, tensor] = tensors[k];
    const int64_t fan_in = tensor.dim() >= 2 ? tensor.numel() / tensor.size(0) : 1;
    std::vector<float> values(static_cast<size_t>(tensor.numel()));
    for (size_t i = 0; i < values.size(); ++i) {
      const double v = std::sin(0.7 * static_cast<double>(i) + 1.3 * static_cast<double>(k) + 0.5);
      const double value = tensor.dim() >= 2 ? v * 1.5 / std::sqrt(static_cast<double>(fan_in))
                           : name.ends_with("freqs") ? 4 * v
                           : name.ends_with(".weight") ? 1 + 0.2 * v
                                                       : 0.1 * v;
      values[i] = static_cast<float>(value);
    }
    tensor.copy_(torch::from_blob(values.data(), tensor.sizes(), torch::kFloat32));
  }
}

std::unique_ptr<NetworkDenoiser> network_of(const TensorFile& vector) {
  ConfigSchema schema;
  add_network_fields(schema);
  return NetworkDenoiser::from_config(Config::parse(schema, vector.metadata.at("config"), vector.source));
}

// Float32 rounding: 1e-5 of the output's largest magnitude. EDM2's networks normalise every
// pixel's features and q/k/v to unit magnitude, dividing by norms that are small wherever the
// features nearly cancel, which amplifies rounding: ours and the twin differ from EDM2's by
// 0.6e-5 to 1.5e-5 there, against 0.3e-6 to 1.8e-6 on EDM's networks.
double tolerance_of(const std::string& vector) { return vector.starts_with("edm2") ? 5e-5 : 1e-5; }

class EdmGoldenVector : public ::testing::TestWithParam<std::string> {};

TEST_P(EdmGoldenVector, OurNetworkHasEdmsStateDictAndReproducesItsOutput) {
  const auto vector = load_tensor_file(golden_dir() / (GetParam() + ".safetensors"));
  const auto denoiser = network_of(vector);
  std::map<std::string, std::vector<int64_t>> ours;
  for (const auto& [name, tensor] : module_tensors(denoiser->module())) ours[name] = tensor.sizes().vec();
  const auto edms = nlohmann::json::parse(vector.metadata.at("state_dict")).get<std::map<std::string, std::vector<int64_t>>>();
  EXPECT_EQ(ours, edms);

  golden_fill(denoiser->module());
  denoiser->module().eval();
  const auto& t = vector.tensors;
  const auto labels = t.count("labels") ? t.at("labels") : at::Tensor();
  torch::NoGradGuard no_grad;
  const double error = relative_difference(denoiser->denoise(t.at("x"), t.at("sigma"), labels), t.at("denoised"));
  std::printf("%s: max relative difference %.2e\n", GetParam().c_str(), error);
  EXPECT_LE(error, tolerance_of(GetParam()));
}

INSTANTIATE_TEST_SUITE_P(Edm, EdmGoldenVector, ::testing::ValuesIn(kVectors), [](const auto& info) {
  auto name = info.param;
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
});

TEST(EdmNetworks, KeysOfAnotherKindAndATargetTimeAreRefusedByName) {
  ConfigSchema schema;
  add_network_fields(schema);
  const auto refusal = [&](const std::string& yaml) {
    try {
      NetworkDenoiser::from_config(Config::parse(schema, yaml, "test.yaml"));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(refusal("model: {kind: unet, encoder_type: residual}").find("'model.encoder_type' does not apply to model.kind unet"), std::string::npos);
  EXPECT_NE(refusal("model: {kind: dhariwal_unet, noise_embedding: fourier}").find("'model.noise_embedding' does not apply to model.kind dhariwal_unet"),
            std::string::npos);
  EXPECT_NE(refusal("model: {kind: song_unet, channels_per_head: 8}").find("'model.channels_per_head' does not apply"), std::string::npos);
  EXPECT_NE(refusal("model: {kind: song_unet, target_time: true}").find("model.kind song_unet has no target-time input"), std::string::npos);
  EXPECT_NE(refusal("model: {kind: edm2_unet, out_channels: 3}").find("'model.out_channels' does not apply to model.kind edm2_unet"), std::string::npos);
  EXPECT_NE(refusal("model: {kind: dhariwal_unet, res_balance: 0.5}").find("'model.res_balance' does not apply"), std::string::npos);
  EXPECT_NE(refusal("model: {kind: unet, patch_size: 2}").find("'model.patch_size' does not apply to model.kind unet"), std::string::npos);
  EXPECT_NE(refusal("model: {kind: dit, channel_mult: [1, 2]}").find("'model.channel_mult' does not apply to model.kind dit"), std::string::npos);
  EXPECT_NE(refusal("model: {kind: dit, target_time: true}").find("model.kind dit has no target-time input"), std::string::npos);
  EXPECT_NE(refusal("model: {kind: dit, resolution: 10, patch_size: 4}").find("not a whole number of 4×4 patches"), std::string::npos);
  EXPECT_EQ(refusal("model: {kind: song_unet, resolution: 8, model_channels: 8, channel_mult: [1, 2], attn_resolutions: [4], "
                    "encoder_type: skip, resample_filter: [1, 3, 3, 1]}"),
            "");
}

std::unique_ptr<NetworkDenoiser> small_dit(const std::string& extra) {
  ConfigSchema schema;
  add_network_fields(schema);
  return NetworkDenoiser::from_config(Config::parse(
      schema, "model: {kind: dit, in_channels: 4, resolution: 8, patch_size: 2, hidden_size: 32, depth: 2, num_heads: 2, num_classes: 5" + extra +
                  "}\nprecond: {parameterization: ddpm}",
      "dit.yaml"));
}

// adaLN-Zero: DiT's initialisation zeroes every modulation and the output layer, so a new DiT
// predicts ε = 0 and denoises to its input exactly, whatever the input, σ and label.
TEST(Dit, ANewDitIsTheIdentityDenoiserUntilTrained) {
  torch::manual_seed(3);
  const auto dit = small_dit("");
  const auto x = torch::randn({3, 4, 8, 8});
  const auto sigma = torch::tensor({0.05f, 2.0f, 150.0f});
  const auto labels = torch::tensor({0, -1, 4}, torch::kInt64);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(dit->denoise(x, sigma, labels), x));
  // Its hidden tokens are not zero: only the gates and the output layer are.
  const auto features = dit->features(x, sigma, labels, {"blocks.1"});
  EXPECT_EQ(features.at("blocks.1").sizes().vec(), (std::vector<int64_t>{3, 32, 4, 4}));
  EXPECT_GT(features.at("blocks.1").abs().max().item<double>(), 0.1);
  golden_fill(dit->module());
  EXPECT_GT((dit->denoise(x, sigma, labels) - x).abs().max().item<double>(), 0.1);
}

TEST(Dit, TheNullClassNeedsLabelDropoutAsInDit) {
  const auto without = small_dit(", label_dropout: 0");
  const auto x = torch::zeros({2, 4, 8, 8});
  const auto sigma = torch::ones({2});
  torch::NoGradGuard no_grad;
  EXPECT_NO_THROW(without->denoise(x, sigma, torch::tensor({0, 4}, torch::kInt64)));
  testing::expect_error_mentioning<Error>([&] { without->denoise(x, sigma, torch::tensor({0, -1}, torch::kInt64)); }, {"no null class"});
  // With label dropout the table has DiT's extra row, as its state dicts do.
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [name, tensor] : module_tensors(small_dit("")->module())) shapes[name] = tensor.sizes().vec();
  EXPECT_EQ(shapes.at("y_embedder.embedding_table.weight"), (std::vector<int64_t>{6, 32}));
  EXPECT_EQ(shapes.at("pos_embed"), (std::vector<int64_t>{1, 16, 32}));
}

TEST(EdmNetworks, PythonTwinsReproduceTheGoldenVectors) {
  if (!testing::python_available()) GTEST_SKIP() << "no project Python (run tools/bootstrap.sh)";
  std::string files;
  for (const auto& name : kVectors) files += " " + shell_quoted(golden_dir() / (name + ".safetensors"));
  const auto result = testing::run_command(testing::kPython + " " + shell_quoted(testing::kSourceDir / "tests/python/golden_vectors.py") + files);
  std::printf("%s", result.output.c_str());
  EXPECT_EQ(result.exit_code, 0) << result.output;
}

// A small checkpoint made by the published code, converted by tools/convert_teacher.py and
// sampled by `distillery sample`, against the published sampler from the same noise and labels.
struct RoundTrip {
  std::string vector, family, sampler_options;
  double tolerance;
  std::string why;
};
const std::vector<RoundTrip> kRoundTrips = {
    {"roundtrip-ddpmpp-cond-vp", "edm", "--sampler heun", 1e-5, "EDM's sampler keeps x in float64 between its 35 evaluations; ours keeps float32"},
    {"roundtrip-dit", "dit", "--sampler ddim --schedule ddpm", 1e-5,
     "DiT's DDIM works in its VP scaling and feeds integer timesteps; ours works in σ and finds the timestep of σ in float64"},
};

class ConvertedCheckpoint : public ::testing::TestWithParam<RoundTrip> {};

TEST_P(ConvertedCheckpoint, SamplesAsThePublishedSamplerDoes) {
  if (!testing::python_available()) GTEST_SKIP() << "no project Python (run tools/bootstrap.sh)";
  const auto& trip = GetParam();
  const auto dir = testing::scratch_dir();
  const auto expected = load_tensor_file(golden_dir() / (trip.vector + ".safetensors"));
  const auto teacher = dir / "teacher.safetensors";
  const auto converted = testing::run_command(testing::kPython + " " + shell_quoted(testing::kSourceDir / "tools/convert_teacher.py") + " " + trip.family +
                                              " " + shell_quoted(golden_dir() / (trip.vector + ".pt")) + " " + shell_quoted(teacher) + " --" + trip.family +
                                              "-kwargs " + shell_quoted(expected.metadata.at(trip.family + "_kwargs")));
  ASSERT_EQ(converted.exit_code, 0) << converted.output;

  const auto sampling = nlohmann::json::parse(expected.metadata.at("sampling"));
  const auto sampled = testing::run_command(testing::kCli + " sample --teacher " + shell_quoted(teacher) + " " + trip.sampler_options + " --steps " +
                                            std::to_string(sampling.at("steps").get<int>()) + " --num " + std::to_string(sampling.at("num").get<int>()) +
                                            " --seed " + std::to_string(sampling.at("seed").get<int>()) + " --out " + shell_quoted(dir / "samples.safetensors"));
  ASSERT_EQ(sampled.exit_code, 0) << sampled.output;
  const auto ours = load_tensor_file(dir / "samples.safetensors").tensors;
  const auto& published = expected.tensors;
  EXPECT_TRUE(torch::equal(ours.at("noise"), published.at("noise"))) << "the noise of (seed, i) changed since the vector was made";
  EXPECT_TRUE(torch::equal(ours.at("labels"), published.at("labels")));
  const double error = relative_difference(ours.at("samples"), published.at("samples"));
  std::printf("%s: distillery sample against %s: max relative difference %.2e (%s)\n", trip.vector.c_str(), expected.metadata.at("sampler").c_str(), error,
              trip.why.c_str());
  EXPECT_LE(error, trip.tolerance);
}

INSTANTIATE_TEST_SUITE_P(Published, ConvertedCheckpoint, ::testing::ValuesIn(kRoundTrips), [](const auto& info) {
  auto name = info.param.vector;
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
});

// An EDM2 state dict (its `unet.` and `logvar_` names, saved with torch.save) converted with its
// constructor arguments loads as the network of the golden vector and reproduces it.
TEST(EdmNetworks, AConvertedEdm2StateDictReproducesItsGoldenVector) {
  if (!testing::python_available()) GTEST_SKIP() << "no project Python (run tools/bootstrap.sh)";
  const auto dir = testing::scratch_dir();
  const auto vector = load_tensor_file(golden_dir() / "edm2-cond.safetensors");
  const auto edm2_kwargs = vector.metadata.at("edm_kwargs");
  const auto saved = testing::run_command(
      testing::kPython + " -c " +
      shell_quoted("import json, sys, torch; sys.path.insert(0, sys.argv[1]); from denoiser import NetworkDenoiser; from golden_fill import golden_fill; "
                   "net = golden_fill(NetworkDenoiser(json.loads(sys.argv[2])).net); "
                   "torch.save({(k if k.startswith(\"logvar_\") else \"unet.\" + k): v for k, v in net.state_dict().items()}, sys.argv[3])") +
      " " + shell_quoted(testing::kSourceDir / "tools/reference") + " " + shell_quoted(vector.metadata.at("config")) + " " + shell_quoted(dir / "edm2.pt"));
  ASSERT_EQ(saved.exit_code, 0) << saved.output;
  auto kwargs = nlohmann::json::parse(edm2_kwargs);
  kwargs["class_name"] = "training.networks_edm2.Precond";
  const auto converted = testing::run_command(testing::kPython + " " + shell_quoted(testing::kSourceDir / "tools/convert_teacher.py") + " edm2 " +
                                              shell_quoted(dir / "edm2.pt") + " " + shell_quoted(dir / "edm2.safetensors") + " --edm-kwargs " +
                                              shell_quoted(kwargs.dump()));
  ASSERT_EQ(converted.exit_code, 0) << converted.output;
  const auto denoiser = NetworkDenoiser::load(dir / "edm2.safetensors");
  const auto& t = vector.tensors;
  torch::NoGradGuard no_grad;
  const double error = relative_difference(denoiser->denoise(t.at("x"), t.at("sigma"), t.at("labels")), t.at("denoised"));
  std::printf("converted EDM2 state dict against EDM2's output: max relative difference %.2e\n", error);
  EXPECT_LE(error, tolerance_of("edm2-cond"));
}

TEST(EdmNetworks, TheConverterRefusesPicklesUnlessTrustedAndUnknownArchitectures) {
  if (!testing::python_available()) GTEST_SKIP() << "no project Python (run tools/bootstrap.sh)";
  const auto dir = testing::scratch_dir();
  const auto converter = testing::kPython + " " + shell_quoted(testing::kSourceDir / "tools/convert_teacher.py") + " edm ";
  const auto out = shell_quoted(dir / "out.safetensors");
  {
    std::ofstream(dir / "network.pkl") << "not read";
    const auto result = testing::run_command(converter + shell_quoted(dir / "network.pkl") + " " + out);
    EXPECT_EQ(result.exit_code, 2);
    EXPECT_NE(result.output.find("--trust-pickle"), std::string::npos) << result.output;
  }
  const auto checkpoint = shell_quoted(golden_dir() / "roundtrip-ddpmpp-cond-vp.pt");
  {
    const auto result = testing::run_command(converter + checkpoint + " " + out + " --preset cifar10-64x64");
    EXPECT_EQ(result.exit_code, 2);
    EXPECT_NE(result.output.find("unknown preset 'cifar10-64x64'"), std::string::npos) << result.output;
  }
  {
    const auto result = testing::run_command(converter + checkpoint + " " + out + R"( --edm-kwargs '{"class_name": "training.networks.iDDPMPrecond"}')");
    EXPECT_EQ(result.exit_code, 2);
    EXPECT_NE(result.output.find("iDDPMPrecond"), std::string::npos) << result.output;
  }
  {
    // Another architecture's arguments: the converter compares every tensor with the declared network's.
    const auto result = testing::run_command(converter + checkpoint + " " + out + " --preset cifar10-32x32-cond-vp");
    EXPECT_EQ(result.exit_code, 2);
    EXPECT_NE(result.output.find("has shape"), std::string::npos) << result.output;
    EXPECT_FALSE(std::filesystem::exists(dir / "out.safetensors"));
  }
  const auto dit_converter = testing::kPython + " " + shell_quoted(testing::kSourceDir / "tools/convert_teacher.py") + " dit ";
  const auto dit_checkpoint = shell_quoted(golden_dir() / "roundtrip-dit.pt");
  {
    const auto result = testing::run_command(dit_converter + dit_checkpoint + " " + out + " --preset DiT-XL/2-256");
    EXPECT_EQ(result.exit_code, 2);
    EXPECT_NE(result.output.find("has shape"), std::string::npos) << result.output;
  }
  {
    const auto result = testing::run_command(dit_converter + dit_checkpoint + " " + out + R"( --dit-kwargs '{"input_size": 8, "num_layers": 2}')");
    EXPECT_EQ(result.exit_code, 2);
    EXPECT_NE(result.output.find("'num_layers' is not one"), std::string::npos) << result.output;
  }
  {
    // An EDM network's state dict is not DiT's, whatever the arguments.
    const auto result = testing::run_command(dit_converter + checkpoint + " " + out + " --preset DiT-S/2-256");
    EXPECT_EQ(result.exit_code, 2);
    EXPECT_NE(result.output.find("lacks tensor"), std::string::npos) << result.output;
  }
}

}  // namespace
}  // namespace distillery
