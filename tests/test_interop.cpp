// PyTorch interop: the Python twins of our networks (tools/reference/denoiser.py) and ours
// agree to 1e-5 relative on the same weights, moved through safetensors in both directions.
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <fstream>

#include "io/tensor_file.h"
#include "core/error.h"
#include "models/network_denoiser.h"
#include "teachers/teacher.h"
#include "tensor_checks.h"
#include "test_support.h"

namespace distillery {
namespace {

using testing::relative_difference;
using testing::shell_quoted;

UNetConfig parity_config(const std::string& embedding) {
  UNetConfig c;
  c.model_channels = 16;
  c.channel_mult = {1, 2, 2};
  c.blocks_per_level = 1;
  c.attn_resolutions = {7, 14};
  c.channels_per_head = 8;
  c.num_classes = 10;
  c.noise_embedding = embedding;
  return c;
}

// "unet-positional", "unet-fourier" or "mlp-PARAMETERIZATION" (a conditional MLP on [3, 2]
// samples with that preconditioning: what the weights file's metadata names).
std::unique_ptr<NetworkDenoiser> parity_denoiser(const std::string& name) {
  const auto suffix = name.substr(name.find('-') + 1);
  if (name.starts_with("mlp"))
    return std::make_unique<NetworkDenoiser>(MLPConfig{.shape = {3, 2}, .hidden = 32, .layers = 2, .embedding = 16, .num_classes = 10},
                                             PrecondSettings{.parameterization = parameterization_from_name(suffix), .sigma_min = 0.005});
  return std::make_unique<NetworkDenoiser>(parity_config(suffix));
}

std::vector<int64_t> batch_shape(int64_t n, const Denoiser& D) {
  std::vector<int64_t> shape = {n};
  for (auto d : D.sample_shape()) shape.push_back(d);
  return shape;
}

std::string parity_script() { return shell_quoted(testing::kSourceDir / "tests/python/network_parity.py"); }

class NetworkParity : public ::testing::TestWithParam<std::string> {};

TEST_P(NetworkParity, PythonTwinReproducesOurOutputs) {
  if (!testing::python_available()) GTEST_SKIP() << "no project Python (run tools/bootstrap.sh)";
  const auto dir = testing::scratch_dir();
  torch::manual_seed(3);
  const auto denoiser = parity_denoiser(GetParam());
  auto& D = *denoiser;
  // Non-zero output layers everywhere, so every path contributes to the result.
  D.module().eval();
  D.save(dir / "weights.safetensors");
  const auto x = torch::randn(batch_shape(4, D));
  const auto sigma = torch::tensor({0.01f, 0.3f, 2.0f, 50.0f});
  const auto labels = torch::tensor({0, 9, -1, 1}, torch::kInt64);
  torch::NoGradGuard no_grad;
  save_tensor_file(dir / "io.safetensors", {{"x", x}, {"sigma", sigma}, {"labels", labels}, {"denoised", D.denoise(x, sigma, labels)}});
  const auto result = testing::run_command(testing::kPython + " " + parity_script() + " check " + shell_quoted(dir / "weights.safetensors") + " " +
                                           shell_quoted(dir / "io.safetensors"));
  std::printf("C++ -> Python (%s): %s", GetParam().c_str(), result.output.c_str());
  EXPECT_EQ(result.exit_code, 0) << result.output;
}

TEST_P(NetworkParity, WeReproduceThePythonTwin) {
  if (!testing::python_available()) GTEST_SKIP() << "no project Python (run tools/bootstrap.sh)";
  const auto dir = testing::scratch_dir();
  const auto shape_donor = parity_denoiser(GetParam());
  const auto result = testing::run_command(testing::kPython + " " + parity_script() + " make " + shell_quoted(shape_donor->config_json()) + " " +
                                           shell_quoted(dir / "weights.safetensors") + " " + shell_quoted(dir / "io.safetensors"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto D = NetworkDenoiser::load(dir / "weights.safetensors");
  const auto io = load_tensor_file(dir / "io.safetensors");
  torch::NoGradGuard no_grad;
  const double error = relative_difference(D->denoise(io.get("x"), io.get("sigma"), io.get("labels")), io.get("denoised"));
  std::printf("Python -> C++ (%s): max relative difference %.3e\n", GetParam().c_str(), error);
  EXPECT_LE(error, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Networks, NetworkParity,
                         ::testing::Values("unet-positional", "unet-fourier", "mlp-edm", "mlp-vp", "mlp-ve", "mlp-rectified-flow", "mlp-consistency",
                                           "mlp-trigflow"),
                         [](const auto& info) {
                           auto name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

TEST(TorchScriptTeacher, ExportedTwinMatchesTheSafetensorsTeacher) {
  if (!testing::python_available()) GTEST_SKIP() << "no project Python (run tools/bootstrap.sh)";
  const auto dir = testing::scratch_dir();
  torch::manual_seed(5);
  NetworkDenoiser D(parity_config("positional"));
  D.module().eval();
  D.save(dir / "weights.safetensors");
  const auto result = testing::run_command(testing::kPython + " " + shell_quoted(testing::kSourceDir / "tools/export_teacher.py") + " " +
                                           shell_quoted(dir / "weights.safetensors") + " " + shell_quoted(dir / "teacher.pt"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto scripted = load_teacher("torchscript:" + (dir / "teacher.pt").string(), torch::kCPU);
  EXPECT_EQ(scripted->sample_shape(), D.sample_shape());
  EXPECT_EQ(scripted->num_classes(), 10);
  EXPECT_DOUBLE_EQ(scripted->sigma_max(), 80.0);
  const auto x = torch::randn({3, 1, 28, 28});
  const auto sigma = torch::tensor({0.05f, 1.0f, 20.0f});
  const auto labels = torch::tensor({3, -1, 7}, torch::kInt64);
  torch::NoGradGuard no_grad;
  EXPECT_LE(relative_difference(scripted->denoise(x, sigma, labels), D.denoise(x, sigma, labels)), 1e-5);
}

TEST(TorchScriptTeacher, MissingOrForeignFilesAreClearErrors) {
  const auto dir = testing::scratch_dir();
  EXPECT_THROW(load_teacher("torchscript:" + (dir / "absent.pt").string(), torch::kCPU), Error);
  std::ofstream(dir / "garbage.pt") << "not a zip archive";
  testing::expect_error_mentioning<Error>([&] { load_teacher("torchscript:" + (dir / "garbage.pt").string(), torch::kCPU); },
                                          {"cannot load TorchScript file"});
}

}  // namespace
}  // namespace distillery
