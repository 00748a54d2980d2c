// `distillery distill` (train a student with a registered method), `distillery generate` (draw
// from a student with the σ grid it was trained on) and `distillery report` (student against
// teacher: FD_fmnist, class accuracy, precision/recall, images/s, side-by-side grids).
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/types.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <numeric>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "eval/evaluate.h"
#include "eval/feature_statistics.h"
#include "eval/image_source.h"
#include "eval/metrics.h"
#include "trajectories/trajectory_reader.h"
#include "core/error.h"
#include "core/progress.h"
#include "distill/registry.h"
#include "io/atomic_file.h"
#include "io/image.h"
#include "io/tensor_file.h"
#include "models/network_denoiser.h"
#include "samplers/sampling.h"
#include "teachers/teacher.h"

namespace distillery {

namespace {

struct GenerateOptions {
  std::string model, out, labels = "all";
  std::optional<int64_t> steps;
  int64_t num = 64, batch = 256;
  uint64_t seed = 0;
};

std::filesystem::path student_file(const std::string& model) {
  const std::filesystem::path path = std::filesystem::is_directory(model) ? std::filesystem::path(model) / "student.safetensors" : std::filesystem::path(model);
  DISTILLERY_CHECK(std::filesystem::is_regular_file(path), Error("no student file").file(path.string())
                                                               .expected("a student .safetensors or a distillation run directory holding student.safetensors"));
  return path;
}

// The request a student was trained for, from its file's metadata.
SampleRequest student_request(const std::filesystem::path& path) {
  const auto metadata = load_tensor_file(path).metadata;
  const auto sampler = metadata.find("student_sampler"), sigmas = metadata.find("student_sigmas");
  DISTILLERY_CHECK(sampler != metadata.end() && sigmas != metadata.end(),
                   Error("not a student: the file has no student_sampler / student_sigmas metadata").file(path.string())
                       .hint("draw from teachers with `distillery sample`"));
  SampleRequest request;
  request.sampler = sampler->second;
  const auto parsed = nlohmann::json::parse(sigmas->second, nullptr, false);
  DISTILLERY_CHECK(parsed.is_array() && !parsed.empty(), Error("student_sigmas metadata is not a list of σ").file(path.string()).got(sigmas->second));
  request.sigmas = parsed.get<std::vector<double>>();
  request.steps = static_cast<int>(request.sigmas.size());
  return request;
}

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
  auto request = student_request(path);
  DISTILLERY_CHECK(!options.steps || *options.steps == request.steps,
                   Error("the student was trained for another number of steps").field("--steps").expected(std::to_string(request.steps))
                       .got(std::to_string(*options.steps)));
  const auto student = NetworkDenoiser::load(path);
  request.num = options.num;
  request.batch = options.batch;
  request.seed = options.seed;
  request.labels = student->num_classes() > 0 ? options.labels : "";
  SampleResult result;
  {
    Progress progress("generate", request.num, "img");
    result = draw_samples(*student, request, &progress);
  }
  const std::filesystem::path out = options.out;
  if (!out.parent_path().empty()) std::filesystem::create_directories(out.parent_path());
  if (out.extension() == ".png") {
    if (student->sample_shape().size() == 3) write_image_grid(out, result.samples);
    else write_scatter_plot(out, result.samples, {}, fmt::format("{} samples, {} NFE, seed {}", request.num, result.nfe, request.seed));
  } else if (out.extension() == ".safetensors") {
    std::vector<std::pair<std::string, at::Tensor>> tensors = {{"samples", result.samples}, {"noise", result.noise}};
    if (result.labels.defined()) tensors.emplace_back("labels", result.labels);
    save_tensor_file(out, tensors,
                     {{"format", "distillery.samples"}, {"format_version", "1"}, {"teacher", path.string()}, {"teacher_hash", teacher_fingerprint(path.string())},
                      {"sampler", request.sampler}, {"steps", std::to_string(request.steps)}, {"nfe", std::to_string(result.nfe)},
                      {"seed", std::to_string(request.seed)}, {"sigmas", nlohmann::json(result.sigmas).dump()}});
  } else {
    DISTILLERY_CHECK(out.extension().empty() && student->sample_shape().size() == 3,
                     Error("unsupported output").field("--out").expected("FILE.png (grid), FILE.safetensors, or a directory for one PNG per image")
                         .got(out.string()));
    write_png_folder(out, result, 0);
  }
  spdlog::info("wrote {} ({} samples, {} NFE each)", out.string(), request.num, result.nfe);
}

struct ReportOptions {
  std::string teacher, student, store, out, classifier = "assets/eval/fmnist-classifier.safetensors", reference = "assets/eval/fmnist-test.npz";
  int64_t num = 500, speed_batch = 64, speed_rounds = 3;
};

// Median seconds of `rounds` timed batches after one untimed warm-up batch.
double median_batch_seconds(Denoiser& model, SampleRequest request, int64_t batch, int64_t rounds) {
  request.num = batch;
  request.batch = batch;
  std::vector<double> seconds;
  for (int64_t r = 0; r <= rounds; ++r) {
    const auto start = std::chrono::steady_clock::now();
    draw_samples(model, request);
    if (r > 0) seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(seconds.begin(), seconds.end());
  return seconds[seconds.size() / 2];
}

struct ReportSide {
  std::string name;
  int64_t nfe = 0;
  SourceEvaluation evaluation;
  double images_per_second = 0;
};

void run_report(const ReportOptions& o) {
  const std::filesystem::path out = o.out;
  std::filesystem::create_directories(out);
  const auto network = domain_feature_network(o.classifier);
  const auto reference = FeatureStatistics::load(o.reference, network.dims);
  const auto real = [&] {
    auto source = open_image_source("dataset:fmnist-test", {});
    return evaluate_source(*source, network, true, 500, false);
  }();
  const auto real_features = real.features.narrow(0, 0, std::min(o.num, real.features.size(0)));

  // The teacher's samples are the store's (its solver and NFE); the student draws the same
  // sample indices from the same seed and labels, so grids compare like with like.
  TrajectoryReader store(o.store, {teacher_fingerprint(o.teacher)});
  const auto& recorded = store.settings();
  DISTILLERY_CHECK(store.size() >= o.num, Error("the trajectory store holds fewer samples than the report needs").file(o.store)
                                              .expected(fmt::format("at least {}", o.num)).got(std::to_string(store.size())).hint("lower --num"));
  const auto student_path = student_file(o.student);
  auto student_sampling = student_request(student_path);
  student_sampling.seed = recorded.seed;
  student_sampling.labels = recorded.labels;
  student_sampling.num = o.num;
  student_sampling.batch = 250;
  SampleRequest teacher_sampling;
  teacher_sampling.sampler = recorded.sampler;
  teacher_sampling.steps = static_cast<int>(recorded.steps);
  teacher_sampling.schedule = schedule_from_name(recorded.schedule);
  teacher_sampling.rho = recorded.rho;
  teacher_sampling.sigma_min = recorded.sigma_min;
  teacher_sampling.sigma_max = recorded.sigma_max;
  teacher_sampling.guidance = recorded.guidance;
  teacher_sampling.labels = recorded.labels;
  teacher_sampling.seed = recorded.seed;

  std::vector<ReportSide> sides(2);
  {
    auto teacher_model = load_teacher(o.teacher);
    sides[0] = {"teacher", BatchSampler(*teacher_model, teacher_sampling).nfe(), {}, 0};
    auto source = open_image_source(o.store, {});
    sides[0].evaluation = evaluate_source(*source, network, true, 250, false);
    spdlog::info("timing the teacher: {} rounds of {} images at {} NFE", o.speed_rounds, o.speed_batch, sides[0].nfe);
    sides[0].images_per_second = static_cast<double>(o.speed_batch) / median_batch_seconds(*teacher_model, teacher_sampling, o.speed_batch, o.speed_rounds);
  }
  const auto student_model = NetworkDenoiser::load(student_path);
  {
    sides[1] = {"student", BatchSampler(*student_model, student_sampling).nfe(), {}, 0};
    auto source = open_image_source("model:" + student_path.string(), student_sampling);
    sides[1].evaluation = evaluate_source(*source, network, true, 250, false);
    sides[1].images_per_second =
        static_cast<double>(o.speed_batch) / median_batch_seconds(*student_model, student_sampling, o.speed_batch, std::max<int64_t>(o.speed_rounds, 10));
  }

  nlohmann::json report = {{"num", o.num}, {"features", network.name}, {"reference", o.reference}, {"teacher", o.teacher}, {"student", student_path.string()},
                           {"speed_batch", o.speed_batch}};
  std::string table = "| model | NFE | FD_fmnist | class accuracy | precision | recall | images/s |\n|---|---|---|---|---|---|---|\n";
  for (auto& side : sides) {
    auto& e = side.evaluation;
    // Only the first `num` store samples count, so both sides are the same size.
    const auto features = e.features.narrow(0, 0, o.num);
    FeatureStatistics statistics;
    statistics.add(features);
    const double fd = frechet_distance(statistics, reference);
    const double accuracy = classification_accuracy(e.logits.narrow(0, 0, o.num), e.labels.narrow(0, 0, o.num));
    const auto pr = precision_recall(real_features, features);
    report[side.name] = {{"nfe", side.nfe}, {"fd_fmnist", fd}, {"class_accuracy", accuracy}, {"precision", pr.precision}, {"recall", pr.recall},
                         {"images_per_second", side.images_per_second}};
    table += fmt::format("| {} | {} | {:.2f} | {:.1f}% | {:.3f} | {:.3f} | {:.1f} |\n", side.name, side.nfe, fd, 100 * accuracy, pr.precision, pr.recall,
                         side.images_per_second);
  }
  report["speedup"] = sides[1].images_per_second / sides[0].images_per_second;

  // Side by side: ten teacher images, a black gap, the student's ten of the same noise, per row.
  constexpr int64_t kRows = 10, kColumns = 10;
  const int64_t shown = std::min<int64_t>(kRows * kColumns, o.num);
  std::vector<int64_t> indices(static_cast<size_t>(shown));
  std::iota(indices.begin(), indices.end(), 0);
  const auto teacher_images = store.pairs(indices).sample;
  const auto student_images = BatchSampler(*student_model, student_sampling).run(indices).samples;
  write_image_grid(out / "teacher.png", teacher_images, kColumns);
  write_image_grid(out / "student.png", student_images, kColumns);
  std::vector<at::Tensor> cells;
  const auto gap = -torch::ones_like(teacher_images.narrow(0, 0, 1));
  for (int64_t r = 0; r * kColumns < shown; ++r) {
    const int64_t n = std::min(kColumns, shown - r * kColumns);
    cells.push_back(teacher_images.narrow(0, r * kColumns, n));
    cells.push_back(gap);
    cells.push_back(student_images.narrow(0, r * kColumns, n));
  }
  write_image_grid(out / "comparison.png", torch::cat(cells), 2 * kColumns + 1);
  const auto run_dir = std::filesystem::is_directory(o.student) ? std::filesystem::path(o.student) : student_path.parent_path();
  if (std::filesystem::exists(run_dir / "fd_vs_step.png"))
    std::filesystem::copy_file(run_dir / "fd_vs_step.png", out / "fd_vs_step.png", std::filesystem::copy_options::overwrite_existing);

  write_file_atomic(out / "report.json", report.dump(2) + "\n");
  const auto markdown = fmt::format(
      "# Student against teacher\n\n{}\nFD_fmnist: Fréchet distance of the domain classifier's features of {} samples against the Fashion-MNIST "
      "test statistics ({}); class accuracy: share of samples the classifier assigns to their requested class; precision/recall: k = 3 "
      "manifolds against {} test images; images/s: median of timed batches of {} on this machine. Speed-up: {:.1f}×.\n\n"
      "![teacher | student, same noise and class per row](comparison.png)\n\n![FD against training step](fd_vs_step.png)\n",
      table, o.num, o.reference, real_features.size(0), o.speed_batch, report["speedup"].get<double>());
  write_file_atomic(out / "report.md", markdown);
  std::printf("%s", table.c_str());
  spdlog::info("wrote {}", (out / "report.md").string());
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
  generate->add_option("--steps", options->steps, "network evaluations per image (checked against the student's)");
  generate->add_option("--num", options->num, "number of images")->check(CLI::PositiveNumber);
  generate->add_option("--seed", options->seed, "image i depends only on (seed, i)");
  generate->add_option("--labels", options->labels, "classes: all (sample i gets class i mod classes), one class (3) or a list (0,2,5)");
  generate->add_option("--batch", options->batch, "images per network call (does not change the images)")->check(CLI::PositiveNumber);
  generate->add_option("--out", options->out, "FILE.png (grid), FILE.safetensors (samples, noise, labels) or DIR (one PNG per image + dataset.json)")
      ->required();
  generate->callback([options] { run_generate(*options); });

  auto report = std::make_shared<ReportOptions>();
  auto* cmd = app.add_subcommand("report", "compare a student with its teacher (Fashion-MNIST): FD_fmnist, accuracy, precision/recall, images/s, grids");
  cmd->add_option("--teacher", report->teacher, "the teacher: " + teacher_forms())->required();
  cmd->add_option("--student", report->student, "a student .safetensors, or a distillation run directory")->required();
  cmd->add_option("--store", report->store, "the teacher's trajectory store: its samples are the teacher's side")->required();
  cmd->add_option("--out", report->out, "report directory (report.md, report.json, PNGs)")->required();
  cmd->add_option("--num", report->num, "samples per side")->check(CLI::PositiveNumber);
  cmd->add_option("--classifier", report->classifier, "domain classifier weights");
  cmd->add_option("--reference", report->reference, "reference statistics (.npz)");
  cmd->add_option("--speed-batch", report->speed_batch, "batch for images/s")->check(CLI::PositiveNumber);
  cmd->add_option("--speed-rounds", report->speed_rounds, "timed teacher batches (the student gets at least 10)")->check(CLI::PositiveNumber);
  cmd->callback([report] { run_report(*report); });
}

}  // namespace distillery
