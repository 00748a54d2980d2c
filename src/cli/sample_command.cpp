// `distillery sample`: draw samples from a teacher with a chosen solver and write them as
// safetensors (samples, noise, labels) or as a PNG (scatter plot or image grid).
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <torch/types.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/device_option.h"
#include "models/cuda_graph_denoiser.h"
#include "core/runtime.h"
#include "cli/sampling_options.h"
#include "core/error.h"
#include "core/progress.h"
#include "io/image.h"
#include "io/tensor_file.h"
#include "samplers/sampler.h"
#include "samplers/sampling.h"
#include "teachers/gaussian_mixture.h"
#include "teachers/teacher.h"

namespace distillery {

namespace {

struct SampleOptions {
  std::string teacher, out, device, precision;
  bool cuda_graph = false;
  SamplingCliOptions sampling;
  SampleRequest request;  // sampling.resolved(), once parsed
};

enum class OutputKind { Safetensors, Png };

OutputKind output_kind(const std::filesystem::path& out) {
  const auto ext = out.extension().string();
  if (ext == ".safetensors") return OutputKind::Safetensors;
  if (ext == ".png") return OutputKind::Png;
  throw Error("unsupported output file type").field("--out").expected("a path ending in .safetensors or .png").got(out.string());
}

void write_png(const std::filesystem::path& out, Denoiser& teacher, const SampleResult& result, const SampleOptions& options) {
  const auto shape = teacher.sample_shape();
  if (shape == std::vector<int64_t>{2}) {
    const auto* gmm = dynamic_cast<const GaussianMixtureDenoiser*>(&teacher);
    at::Tensor means;
    if (gmm) {
      // Host values for the plot.
      means = torch::empty({gmm->spec().components(), 2}, torch::kFloat64);
      for (int64_t k = 0; k < means.size(0); ++k) means[k] = torch::tensor(gmm->spec().means[static_cast<size_t>(k)], torch::kFloat64);
    }
    write_scatter_plot(out, result.samples, means,
                       fmt::format("{} samples, {} {} steps ({} NFE), seed {}; crosses: mixture means", result.samples.size(0),
                                   options.request.sampler, options.request.steps, result.nfe, options.request.seed));
  } else if (drawable_as_image(shape)) {
    write_image_grid(out, result.samples);
  } else {
    throw Error(fmt::format("cannot draw samples of shape [{}] as a PNG", fmt::join(shape, ", ")))
        .field("--out")
        .expected("2-D points or images [C, H, W] with C = 1 or 3")
        .hint("write .safetensors instead (latents become images only through their VAE, which distillery does not include)");
  }
}

void run_sample(SampleOptions& options) {
  const std::filesystem::path out = options.out;
  const auto kind = output_kind(out);
  if (!out.parent_path().empty()) std::filesystem::create_directories(out.parent_path());
  options.request = options.sampling.resolved();

  const auto device = make_runtime(options.device).device;
  auto teacher = load_teacher(options.teacher, device);
  const auto& request = options.request;
  spdlog::info("sampling {} from {} with {} ({} steps, seed {}{})", request.num, options.teacher, request.sampler, request.steps, request.seed,
               options.precision == "fp32" ? "" : ", " + options.precision);
  SampleResult result;
  {
    SampledDenoiser sampled(*teacher, options.cuda_graph);
    Progress progress("sample", request.num, "img");
    const PrecisionScope precision(options.precision, device);
    result = draw_samples(sampled.get(), request, &progress);
    if (const auto summary = sampled.summary(); !summary.empty()) spdlog::info("{}", summary);
  }

  if (kind == OutputKind::Png) {
    write_png(out, *teacher, result, options);
  } else {
    const auto schedule = resolve_schedule(request, *teacher);
    const std::map<std::string, std::string> metadata = {
        {"format", "distillery.samples"},
        {"format_version", "1"},
        {"teacher", options.teacher},
        {"teacher_hash", teacher_fingerprint(options.teacher)},
        {"sampler", request.sampler},
        {"steps", std::to_string(request.steps)},
        {"nfe", std::to_string(result.nfe)},
        {"schedule", std::string(schedule_name(schedule.kind))},
        {"rho", fmt::format("{}", schedule.rho)},
        {"seed", std::to_string(request.seed)},
        {"guidance", fmt::format("{}", request.guidance)},
        {"precision", options.precision},
        {"sigmas", nlohmann::json(result.sigmas).dump()},
    };
    std::vector<std::pair<std::string, at::Tensor>> tensors = {{"samples", result.samples}, {"noise", result.noise}};
    if (result.labels.defined()) tensors.emplace_back("labels", result.labels);
    save_tensor_file(out, tensors, metadata);
  }
  spdlog::info("wrote {}", out.string());
}

}  // namespace

void add_sample_command(CLI::App& app) {
  auto options = std::make_shared<SampleOptions>();
  auto* cmd = app.add_subcommand("sample", "draw samples from a teacher with an ODE solver; write .safetensors or a .png plot/grid");
  cmd->add_option("--teacher", options->teacher, "the teacher: " + teacher_forms())->required();
  add_sampling_options(*cmd, options->sampling);
  add_precision_option(*cmd, options->precision);
  add_cuda_graph_option(*cmd, options->cuda_graph);
  add_device_option(*cmd, options->device);
  cmd->add_option("--out", options->out, "output: FILE.safetensors (samples, noise[, labels]) or FILE.png")->required();
  cmd->callback([options] { run_sample(*options); });
}

}  // namespace distillery
