#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include <array>

#include "core/error.h"
#include "samplers/sampler.h"

namespace distillery {

namespace {
struct SamplerEntry {
  std::string_view name;
  std::unique_ptr<Sampler> (*make)();
};
constexpr std::array<SamplerEntry, 2> kSamplers = {{
    {"euler", make_euler_sampler},
    {"heun", make_heun_sampler},
}};
}  // namespace

std::vector<std::string> sampler_names() {
  std::vector<std::string> names;
  for (const auto& entry : kSamplers) names.emplace_back(entry.name);
  return names;
}

std::unique_ptr<Sampler> make_sampler(std::string_view name) {
  for (const auto& entry : kSamplers)
    if (entry.name == name) return entry.make();
  throw Error(fmt::format("unknown sampler '{}'", name)).field("sampler").expected(fmt::format("one of: {}", fmt::join(sampler_names(), ", ")));
}

at::Tensor denoise_at(Denoiser& denoiser, const at::Tensor& x, double sigma, const at::Tensor& labels) {
  return denoiser.denoise(x, torch::full({x.size(0)}, sigma, x.options()), labels);
}

}  // namespace distillery
