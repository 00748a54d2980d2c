#include "teachers/teacher.h"

#include <fmt/format.h>

#include <filesystem>

#include "core/error.h"
#include "core/hash.h"
#include "models/torchscript_denoiser.h"
#include "models/network_denoiser.h"
#include "models/routed_denoiser.h"
#include "teachers/gaussian_mixture.h"

namespace distillery {

std::string teacher_forms() {
  return "gmm:FILE.yaml (analytic Gaussian mixture), FILE.safetensors (a trained denoiser), a training run's directory, "
         "or torchscript:FILE (trusted files only: TorchScript loading is not safe on hostile input)";
}

namespace {
// The file whose bytes define the teacher a spec names.
std::filesystem::path defining_file(const std::string& spec) {
  for (std::string_view prefix : {"gmm:", "torchscript:"})
    if (spec.starts_with(prefix)) return spec.substr(prefix.size());
  if (std::filesystem::is_directory(spec)) return std::filesystem::path(spec) / "teacher.safetensors";
  return spec;
}
}  // namespace

std::string teacher_fingerprint(const std::string& spec) {
  const auto path = defining_file(spec);
  DISTILLERY_CHECK(std::filesystem::is_regular_file(path), Error("cannot read the teacher").file(path.string()).expected(teacher_forms()));
  return file_fingerprint(path);
}

namespace {
std::unique_ptr<Denoiser> load_teacher_on_cpu(const std::string& spec) {
  constexpr std::string_view kGmm = "gmm:";
  if (spec.starts_with(kGmm)) return std::make_unique<GaussianMixtureDenoiser>(GaussianMixtureSpec::load(spec.substr(kGmm.size())));
  constexpr std::string_view kTorchScript = "torchscript:";
  if (spec.starts_with(kTorchScript)) return std::make_unique<TorchScriptDenoiser>(spec.substr(kTorchScript.size()));
  if (spec.ends_with(".safetensors")) return load_denoiser_file(spec);
  if (std::filesystem::is_directory(spec)) {
    const auto weights = std::filesystem::path(spec) / "teacher.safetensors";
    if (!std::filesystem::exists(weights)) {
      // A distillation run's network (a reflowed model, a progressive-distillation round) is
      // often the next stage's teacher: point at it rather than guess which file is meant.
      const auto student = std::filesystem::path(spec) / "student.safetensors";
      throw Error("directory holds no teacher.safetensors").file(spec).hint(
          std::filesystem::exists(student) ? fmt::format("it is a distillation run: pass its network as --teacher {}", student.string())
                                           : std::string("a teacher training run writes it when it finishes"));
    }
    return NetworkDenoiser::load(weights);
  }
  throw Error(fmt::format("unrecognised teacher '{}'", spec)).field("--teacher").expected(teacher_forms());
}
}  // namespace

std::unique_ptr<Denoiser> load_teacher(const std::string& spec, const c10::Device& device) {
  auto teacher = load_teacher_on_cpu(spec);
  teacher->to(device);
  return teacher;
}

}  // namespace distillery
