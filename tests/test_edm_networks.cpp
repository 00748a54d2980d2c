// EDM's published networks (DDPM++, NCSN++, ADM) against golden vectors made by EDM's own code
// (tests/golden/edm/, written by tools/reference/make_golden_vectors.py): ours in C++, the Python
// twins, and a small EDM checkpoint converted by tools/convert_teacher.py and sampled through
// the CLI against EDM's sampler on the same noise.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/error.h"
#include "io/tensor_file.h"
#include "models/network_denoiser.h"
#include "models/weights.h"
#include "test_support.h"

namespace distillery {
namespace {

using testing::shell_quoted;

const std::filesystem::path& golden_dir() {
  static const auto dir = testing::kSourceDir / "tests/golden/edm";
  return dir;
}

const std::vector<std::string> kVectors = {"ddpmpp-cond-vp", "ncsnpp-uncond-ve", "songunet-skip-cond-edm", "adm-cond-edm", "edm2-cond", "edm2-uncond-latent"};

// The weights rule of tools/reference/golden_fill.py.
void golden_fill(torch::nn::Module& module) {
  auto tensors = module_tensors(module);
  std::erase_if(tensors, [](const auto& named) { return named.first.ends_with("resample_filter"); });
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

double relative_difference(const at::Tensor& got, const at::Tensor& expected) {
  return ((got - expected).abs().max() / expected.abs().max()).item<double>();
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
  EXPECT_EQ(refusal("model: {kind: song_unet, resolution: 8, model_channels: 8, channel_mult: [1, 2], attn_resolutions: [4], "
                    "encoder_type: skip, resample_filter: [1, 3, 3, 1]}"),
            "");
}

TEST(EdmNetworks, PythonTwinsReproduceTheGoldenVectors) {
  if (!testing::python_available()) GTEST_SKIP() << "no project Python (run tools/bootstrap.sh)";
  std::string files;
  for (const auto& name : kVectors) files += " " + shell_quoted(golden_dir() / (name + ".safetensors"));
  const auto result = testing::run_command(testing::kPython + " " + shell_quoted(testing::kSourceDir / "tests/python/golden_vectors.py") + files);
  std::printf("%s", result.output.c_str());
  EXPECT_EQ(result.exit_code, 0) << result.output;
}

TEST(EdmNetworks, AConvertedCheckpointSamplesAsEdmsSamplerDoes) {
  if (!testing::python_available()) GTEST_SKIP() << "no project Python (run tools/bootstrap.sh)";
  const auto dir = testing::scratch_dir();
  const auto expected = load_tensor_file(golden_dir() / "roundtrip-ddpmpp-cond-vp.safetensors");
  const auto converter = testing::kPython + " " + shell_quoted(testing::kSourceDir / "tools/convert_teacher.py") + " edm ";
  const auto checkpoint = shell_quoted(golden_dir() / "roundtrip-ddpmpp-cond-vp.pt");
  const auto teacher = dir / "teacher.safetensors";
  const auto converted = testing::run_command(converter + checkpoint + " " + shell_quoted(teacher) + " --edm-kwargs " +
                                              shell_quoted(expected.metadata.at("edm_kwargs")));
  ASSERT_EQ(converted.exit_code, 0) << converted.output;

  const auto sampling = nlohmann::json::parse(expected.metadata.at("sampling"));
  const auto sampled = testing::run_command(testing::kCli + " sample --teacher " + shell_quoted(teacher) + " --sampler heun --steps " +
                                            std::to_string(sampling.at("steps").get<int>()) + " --num " + std::to_string(sampling.at("num").get<int>()) +
                                            " --seed " + std::to_string(sampling.at("seed").get<int>()) + " --out " + shell_quoted(dir / "samples.safetensors"));
  ASSERT_EQ(sampled.exit_code, 0) << sampled.output;
  const auto ours = load_tensor_file(dir / "samples.safetensors").tensors;
  const auto& edm = expected.tensors;
  EXPECT_TRUE(torch::equal(ours.at("noise"), edm.at("noise"))) << "the noise of (seed, i) changed since the vector was made";
  EXPECT_TRUE(torch::equal(ours.at("labels"), edm.at("labels")));
  // EDM's sampler keeps x in float64 between its 35 evaluations; ours keeps float32.
  const double error = relative_difference(ours.at("samples"), edm.at("samples"));
  std::printf("distillery sample against EDM's edm_sampler: max relative difference %.2e\n", error);
  EXPECT_LE(error, 1e-5);
}

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
}

}  // namespace
}  // namespace distillery
