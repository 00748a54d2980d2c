// PyTorch interop: the Python twin of the UNet (tools/reference/unet.py) and ours agree to
// 1e-5 relative on the same weights, moved through safetensors in both directions.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "io/tensor_file.h"
#include "models/unet_denoiser.h"
#include "test_support.h"

namespace distillery {
namespace {

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

std::string parity_script() { return shell_quoted(testing::kSourceDir / "tests/python/unet_parity.py"); }

double relative_difference(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max()).item<double>();
}

class UNetParity : public ::testing::TestWithParam<std::string> {};

TEST_P(UNetParity, PythonTwinReproducesOurOutputs) {
  if (!testing::python_available()) GTEST_SKIP() << "no project Python (run tools/bootstrap.sh)";
  const auto dir = testing::scratch_dir();
  torch::manual_seed(3);
  UNetDenoiser D(parity_config(GetParam()), 0.5, 0.002, 80);
  // Non-zero output layers everywhere, so every path contributes to the result.
  D.net()->eval();
  D.save(dir / "weights.safetensors");
  const auto x = torch::randn({4, 1, 28, 28});
  const auto sigma = torch::tensor({0.01f, 0.3f, 2.0f, 50.0f});
  const auto labels = torch::tensor({0, 9, -1, 1}, torch::kInt64);
  torch::NoGradGuard no_grad;
  save_tensor_file(dir / "io.safetensors", {{"x", x}, {"sigma", sigma}, {"labels", labels}, {"denoised", D.denoise(x, sigma, labels)}});
  const auto result = testing::run_command(testing::kPython + " " + parity_script() + " check " + shell_quoted(dir / "weights.safetensors") + " " +
                                           shell_quoted(dir / "io.safetensors"));
  std::printf("C++ -> Python (%s): %s", GetParam().c_str(), result.output.c_str());
  EXPECT_EQ(result.exit_code, 0) << result.output;
}

TEST_P(UNetParity, WeReproduceThePythonTwin) {
  if (!testing::python_available()) GTEST_SKIP() << "no project Python (run tools/bootstrap.sh)";
  const auto dir = testing::scratch_dir();
  const UNetDenoiser shape_donor(parity_config(GetParam()), 0.5, 0.002, 80);
  const auto result = testing::run_command(testing::kPython + " " + parity_script() + " make " + shell_quoted(shape_donor.config_json()) + " " +
                                           shell_quoted(dir / "weights.safetensors") + " " + shell_quoted(dir / "io.safetensors"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto D = UNetDenoiser::load(dir / "weights.safetensors");
  const auto io = load_tensor_file(dir / "io.safetensors");
  torch::NoGradGuard no_grad;
  const double error = relative_difference(D->denoise(io.get("x"), io.get("sigma"), io.get("labels")), io.get("denoised"));
  std::printf("Python -> C++ (%s): max relative difference %.3e\n", GetParam().c_str(), error);
  EXPECT_LE(error, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Embeddings, UNetParity, ::testing::Values("positional", "fourier"));

}  // namespace
}  // namespace distillery
