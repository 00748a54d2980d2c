#include "eval/report.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <torch/types.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <numeric>

#include "core/error.h"
#include "eval/evaluate.h"
#include "eval/feature_statistics.h"
#include "eval/image_source.h"
#include "eval/metrics.h"
#include "io/atomic_file.h"
#include "io/image.h"
#include "models/network_denoiser.h"
#include "models/routed_denoiser.h"
#include "samplers/sampling.h"
#include "teachers/student.h"
#include "teachers/teacher.h"
#include "trajectories/trajectory_reader.h"

namespace distillery {

namespace {

// Median seconds of `rounds` timed batches after one untimed warm-up batch.
double median_batch_seconds(Denoiser& model, SampleRequest request, int64_t batch, int64_t rounds) {
  request.num = batch;
  request.batch = batch;
  std::vector<double> seconds;
  for (int64_t r = 0; r <= rounds; ++r) {
    const auto start = std::chrono::steady_clock::now();
    // Bringing the images to the host waits for the device to finish them.
    draw_samples(model, request).samples.cpu();
    if (r > 0) seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(seconds.begin(), seconds.end());
  return seconds[seconds.size() / 2];
}

// A smaller student (SlimFlow's) is judged by its size as well as its speed; analytic and
// TorchScript teachers expose no parameters and count 0 (shown as –).
// A routed set counts all its networks, though each image passes through one.
int64_t parameter_count(Denoiser& model) {
  if (auto* routed = dynamic_cast<RoutedDenoiser*>(&model)) {
    int64_t count = 0;
    for (size_t k = 0; k < routed->size(); ++k) count += parameter_count(routed->network(k));
    return count;
  }
  const auto* network = dynamic_cast<const NetworkDenoiser*>(&model);
  if (network == nullptr) return 0;
  int64_t count = 0;
  for (const auto& parameter : network->module().parameters()) count += parameter.numel();
  return count;
}

struct ReportSide {
  std::string name;
  int64_t nfe = 0;
  SourceEvaluation evaluation;
  double images_per_second = 0;
  int64_t parameters = 0;
};

}  // namespace

void run_report(const ReportOptions& o) {
  const std::filesystem::path out = o.out;
  std::filesystem::create_directories(out);
  const auto& device = o.device;
  // The teacher's samples are the store's (its solver and NFE); the student draws the same
  // sample indices from the same seed and labels, so grids compare like with like.
  TrajectoryReader store(o.store, {teacher_fingerprint(o.teacher)});
  const auto& recorded = store.settings();
  DISTILLERY_CHECK(store.size() >= o.num, Error("the trajectory store holds fewer samples than the report needs").file(o.store)
                                              .expected(fmt::format("at least {}", o.num)).got(std::to_string(store.size())).hint("lower --num"));
  const auto student_path = student_file(o.student);
  const auto student_model = load_denoiser_file(student_path);
  // Checked before any sampling, and named here: the samplers would only name their --labels.
  DISTILLERY_CHECK(student_model->sample_shape() == recorded.sample_shape,
                   Error("the student makes samples of another shape than the teacher's store").file(student_path.string())
                       .expected(fmt::format("[{}] (the store {})", fmt::join(recorded.sample_shape, ", "), o.store))
                       .got(fmt::format("[{}]", fmt::join(student_model->sample_shape(), ", "))));
  DISTILLERY_CHECK(student_model->num_classes() == recorded.num_classes,
                   Error("the student and the teacher's store differ in their classes").file(student_path.string())
                       .expected(fmt::format("{} classes (the store {}, labels '{}'; 0: unconditional)", recorded.num_classes, o.store, recorded.labels))
                       .got(fmt::format("{} classes", student_model->num_classes())));
  student_model->to(device);

  const auto network = domain_feature_network(o.classifier, device);
  const auto reference = FeatureStatistics::load(o.reference, network.dims, network.hash);
  const auto real = [&] {
    auto source = open_image_source("dataset:fmnist-test", {}, device);
    return evaluate_source(*source, network, true, 500, false);
  }();
  const auto real_features = real.features.narrow(0, 0, std::min(o.num, real.features.size(0)));
  auto student_sampling = student_request(student_path, o.steps);
  student_sampling.seed = recorded.seed;
  student_sampling.labels = recorded.labels;
  student_sampling.num = o.num;
  student_sampling.batch = 250;
  const auto teacher_sampling = sampling_request(recorded);

  std::vector<ReportSide> sides(2);
  {
    auto teacher_model = load_teacher(o.teacher, device);
    sides[0] = {"teacher", BatchSampler(*teacher_model, teacher_sampling).nfe(), {}, 0, parameter_count(*teacher_model)};
    auto source = open_image_source(o.store, {}, device);
    sides[0].evaluation = evaluate_source(*source, network, true, 250, false);
    spdlog::info("timing the teacher: {} rounds of {} images at {} NFE", o.speed_rounds, o.speed_batch, sides[0].nfe);
    sides[0].images_per_second = static_cast<double>(o.speed_batch) / median_batch_seconds(*teacher_model, teacher_sampling, o.speed_batch, o.speed_rounds);
  }
  {
    sides[1] = {"student", BatchSampler(*student_model, student_sampling).nfe(), {}, 0, parameter_count(*student_model)};
    auto source = open_image_source("model:" + student_path.string(), student_sampling, device);
    sides[1].evaluation = evaluate_source(*source, network, true, 250, false);
    sides[1].images_per_second =
        static_cast<double>(o.speed_batch) / median_batch_seconds(*student_model, student_sampling, o.speed_batch, std::max<int64_t>(o.speed_rounds, 10));
  }

  nlohmann::json report = {{"num", o.num}, {"features", network.name}, {"reference", o.reference}, {"teacher", o.teacher}, {"student", student_path.string()},
                           {"speed_batch", o.speed_batch}};
  std::string table = "| model | parameters | NFE | FD_fmnist | class accuracy | precision | recall | images/s |\n|---|---|---|---|---|---|---|---|\n";
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
                         {"images_per_second", side.images_per_second}, {"parameters", side.parameters}};
    table += fmt::format("| {} | {} | {} | {:.2f} | {:.1f}% | {:.3f} | {:.3f} | {:.1f} |\n", side.name,
                         side.parameters > 0 ? std::to_string(side.parameters) : "–", side.nfe, fd, 100 * accuracy, pr.precision, pr.recall,
                         side.images_per_second);
  }
  report["speedup"] = sides[1].images_per_second / sides[0].images_per_second;

  // Side by side: ten teacher images, a black gap, the student's ten of the same noise, per row.
  constexpr int64_t kRows = 10, kColumns = 10;
  const int64_t shown = std::min<int64_t>(kRows * kColumns, o.num);
  std::vector<int64_t> indices(static_cast<size_t>(shown));
  std::iota(indices.begin(), indices.end(), 0);
  const auto teacher_images = store.pairs(indices).sample;
  const auto student_images = BatchSampler(*student_model, student_sampling).run(indices).samples.cpu();
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

}  // namespace distillery
