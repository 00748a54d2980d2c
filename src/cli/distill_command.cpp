// `distillery distill` (train a student with a registered method), `distillery generate` (draw
// from a student with the σ grid it was trained on) and `distillery report` (student against
// teacher: FD_fmnist, class accuracy, precision/recall, images/s, side-by-side grids).
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <torch/types.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/number_checks.h"
#include "cli/commands.h"
#include "cli/device_option.h"
#include "models/cuda_graph_denoiser.h"
#include "core/error.h"
#include "core/progress.h"
#include "core/runtime.h"
#include "distill/registry.h"
#include "eval/report.h"
#include "io/atomic_file.h"
#include "io/image.h"
#include "io/tensor_file.h"
#include "models/routed_denoiser.h"
#include "samplers/sampling.h"
#include "teachers/student.h"
#include "teachers/teacher.h"

namespace distillery {

namespace {

struct GenerateOptions {
  std::string model, out, labels, device, precision;  // labels: empty is the student's own (all its network's classes unless its file names some)
  std::optional<int> steps;
  std::vector<double> sigmas;  // an explicit multistep grid instead of the student's own
  std::optional<double> gamma;
  int64_t num = 64, batch = 256;
  uint64_t seed = 0;
  bool check_memory = true, cuda_graph = false;
};

void write_png_folder(const std::filesystem::path& dir, const SampleResult& result, int64_t first_index) {
  std::filesystem::create_directories(dir);
  nlohmann::json labels = nlohmann::json::array();
  for (int64_t i = 0; i < result.samples.size(0); ++i) {
    const auto name = fmt::format("{:06d}.png", first_index + i);
    write_image_grid(dir / name, result.samples.narrow(0, i, 1), 1);
    if (result.labels.defined()) labels.push_back({name, result.labels[i].item<int64_t>()});
  }
  // EDM's dataset.json, so the folder is a labelled image source for `eval`.
  if (result.labels.defined()) write_file_atomic(dir / "dataset.json", nlohmann::json{{"labels", labels}}.dump() + "\n");
}

void run_generate(const GenerateOptions& options) {
  const auto path = student_file(options.model);
  auto request = student_request(path, options.steps);
  if (!options.sigmas.empty()) {
    DISTILLERY_CHECK(!options.steps || *options.steps == static_cast<int>(options.sigmas.size()),
                     Error("--steps and --sigmas disagree").field("--sigmas").expected(fmt::format("{} σ values", *options.steps))
                         .got(std::to_string(options.sigmas.size())));
    request.sampler = "multistep";
    request.sigmas = options.sigmas;
    request.steps = static_cast<int>(options.sigmas.size());
  }
  if (options.gamma) {
    DISTILLERY_CHECK(request.sampler == "multistep", Error("--gamma is γ-sampling's, which this student does not use").file(path.string())
                                                         .field("--gamma").expected("a consistency or trajectory student (sampler multistep)").got(request.sampler));
    request.options.gamma = *options.gamma;
  }
  const auto student = load_denoiser_file(path);
  const std::filesystem::path out = options.out;
  const auto shape = student->sample_shape();
  DISTILLERY_CHECK(out.extension() == ".safetensors" || drawable_as_image(shape) || shape.size() != 3,
                   Error(fmt::format("samples of shape [{}] are not images a PNG can show", fmt::join(shape, ", "))).field("--out").got(out.string())
                       .hint("write FILE.safetensors (latents become images only through their VAE, which distillery does not include)"));
  const auto device = make_runtime(options.device).device;
  student->to(device);
  request.num = options.num;
  request.batch = options.batch;
  request.check_memory = options.check_memory;
  request.seed = options.seed;
  // A student of some classes draws those by default (its file's student_labels).
  if (!options.labels.empty()) request.labels = options.labels;
  SampleResult result;
  {
    SampledDenoiser sampled(*student, options.cuda_graph);
    Progress progress("generate", request.num, "img");
    const PrecisionScope precision(options.precision, device);
    result = draw_samples(sampled.get(), request, &progress);
    if (const auto summary = sampled.summary(); !summary.empty()) spdlog::info("{}", summary);
  }
  if (!out.parent_path().empty()) std::filesystem::create_directories(out.parent_path());
  if (out.extension() == ".png") {
    if (shape.size() == 3) write_image_grid(out, result.samples);
    else write_scatter_plot(out, result.samples, {}, fmt::format("{} samples, {} NFE, seed {}", request.num, result.nfe, request.seed));
  } else if (out.extension() == ".safetensors") {
    std::vector<std::pair<std::string, at::Tensor>> tensors = {{"samples", result.samples}, {"noise", result.noise}};
    if (result.labels.defined()) tensors.emplace_back("labels", result.labels);
    save_tensor_file(out, tensors,
                     {{"format", "distillery.samples"}, {"format_version", "1"}, {"teacher", path.string()}, {"teacher_hash", teacher_fingerprint(path.string())},
                      {"sampler", request.sampler}, {"steps", std::to_string(request.steps)}, {"nfe", std::to_string(result.nfe)},
                      {"seed", std::to_string(request.seed)}, {"sigmas", nlohmann::json(result.sigmas).dump()},
                      {"precision", options.precision}});
  } else {
    DISTILLERY_CHECK(out.extension().empty() && student->sample_shape().size() == 3,
                     Error("unsupported output").field("--out").expected("FILE.png (grid), FILE.safetensors, or a directory for one PNG per image")
                         .got(out.string()));
    write_png_folder(out, result, 0);
  }
  spdlog::info("wrote {} ({} samples, {} NFE each)", out.string(), request.num, result.nfe);
}

}  // namespace

void add_distill_command(CLI::App& app) {
  auto teacher = std::make_shared<std::string>(), data = std::make_shared<std::string>();
  auto* distill = app.add_subcommand("distill", "train a few-step student from a teacher with a distillation method");
  distill->add_option("--teacher", *teacher, "the teacher: " + teacher_forms())->required();
  distill->add_option("--data", *data, "real images for methods that use them (DMD2's GAN head): a folder of PNG/JPEG with optional "
                                       "dataset.json labels; default: the recipe's data.* (Fashion-MNIST's training split)")
      ->check(CLI::ExistingDirectory);
  add_training_options(*distill, "configs/distill/dmd2_fmnist.yaml", [teacher, data](const TrainingRunOptions& o) {
    auto options = o;
    if (!data->empty()) options.overrides.insert(options.overrides.end(), {"data.dataset=folder", "data.path=" + *data});
    run_distillation(options, *teacher);
  });

  auto options = std::make_shared<GenerateOptions>();
  auto* generate = app.add_subcommand("generate", "draw images from a distilled student with the σ grid it was trained on");
  generate->add_option("--model", options->model, "a student .safetensors, or a distillation run directory")->required();
  generate->add_option("--steps", options->steps, "network evaluations per image: the student's own, or another count its file offers "
                                                  "(consistency students: 1, 2 and 4 by default)")->check(CLI::Range(1, 100));
  generate->add_option("--sigmas", options->sigmas, "multistep sampling at these σ, largest first (e.g. 80,0.821): for choosing a consistency "
                                                    "student's grid")->delimiter(',');
  generate->add_option("--gamma", options->gamma, "γ-sampling (consistency and trajectory students): 1 re-noises fully after every jump, "
                                                  "0 jumps deterministically (default: the student's own, else 1)")->check(CLI::Range(0.0, 1.0));
  generate->add_option("--num", options->num, "number of images")->check(count_check());
  generate->add_option("--seed", options->seed, "image i depends only on (seed, i)")->check(seed_check());
  generate->add_option("--labels", options->labels, "conditional students: all (sample i gets class i mod classes; the default), one class (3) or a list (0,2,5)");
  generate->add_option("--batch", options->batch, "images per network call (does not change the images)")->check(count_check());
  add_memory_check_option(*generate, options->check_memory);
  add_device_option(*generate, options->device);
  add_precision_option(*generate, options->precision);
  add_cuda_graph_option(*generate, options->cuda_graph);
  generate->add_option("--out", options->out, "FILE.png (grid), FILE.safetensors (samples, noise, labels) or DIR (one PNG per image + dataset.json)")
      ->required();
  generate->callback([options] { run_generate(*options); });

  auto report = std::make_shared<ReportOptions>();
  auto report_device = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("report", "compare a student with its teacher (Fashion-MNIST): FD_fmnist, accuracy, precision/recall, images/s, grids");
  cmd->add_option("--teacher", report->teacher, "the teacher: " + teacher_forms())->required();
  cmd->add_option("--student", report->student, "a student .safetensors, or a distillation run directory")->required();
  cmd->add_option("--store", report->store, "the teacher's trajectory store: its samples are the teacher's side")->required();
  cmd->add_option("--out", report->out, "report directory (report.md, report.json, PNGs)")->required();
  cmd->add_option("--num", report->num, "samples per side")->check(count_check());
  cmd->add_option("--steps", report->steps, "the student's steps: its own (default) or another count its file offers")->check(CLI::Range(1, 100));
  cmd->add_option("--classifier", report->classifier, "domain classifier weights");
  cmd->add_option("--reference", report->reference, "reference statistics (.npz)");
  cmd->add_option("--speed-batch", report->speed_batch, "batch for images/s")->check(count_check());
  add_device_option(*cmd, *report_device);
  cmd->add_option("--speed-rounds", report->speed_rounds, "timed teacher batches (the student gets at least 10)")->check(count_check());
  cmd->callback([report, report_device] {
    report->device = make_runtime(*report_device).device;
    run_report(*report);
  });
}

}  // namespace distillery
