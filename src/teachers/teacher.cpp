#include "teachers/teacher.h"

#include <fmt/format.h>

#include "core/error.h"
#include "teachers/gaussian_mixture.h"

namespace distillery {

std::string teacher_forms() { return "gmm:FILE.yaml (analytic Gaussian mixture)"; }

std::unique_ptr<Denoiser> load_teacher(const std::string& spec) {
  constexpr std::string_view kGmm = "gmm:";
  if (spec.starts_with(kGmm)) return std::make_unique<GaussianMixtureDenoiser>(GaussianMixtureSpec::load(spec.substr(kGmm.size())));
  throw Error(fmt::format("unrecognised teacher '{}'", spec)).field("--teacher").expected(teacher_forms());
}

}  // namespace distillery
