// `distillery classifier train` (the Fashion-MNIST domain classifier) and `distillery eval`
// (stats, fd, kid, pr, accuracy): metrics between image sources in the classifier's features,
// printed as one JSON object stating the metric, the sample counts, the feature network and
// the protocol.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/number_checks.h"
#include "cli/commands.h"
#include "cli/device_option.h"
#include "core/runtime.h"
#include "cli/sampling_options.h"
#include "core/error.h"
#include "eval/domain_classifier.h"
#include "eval/evaluate.h"
#include "eval/feature_statistics.h"
#include "eval/image_source.h"
#include "eval/metrics.h"

namespace distillery {

namespace {

struct EvalOptions {
  std::vector<std::string> sources;
  std::string features = "fmnist";
  std::string classifier = "assets/eval/fmnist-classifier.safetensors";
  std::string inception = "inception-fid.safetensors";
  std::string out, device;
  SamplingCliOptions sampling;
  int64_t kid_subsets = 100, kid_subset_size = 1000, k = 3;
  bool quiet = false;
};

// A statistics file (.npz) or an image source through the classifier.
struct Side {
  std::string description;
  SourceEvaluation evaluation;
  double seconds = 0;  // reading, generating and feature extraction
};

Side evaluate(const std::string& spec, const FeatureNetwork& network, const EvalOptions& o, bool keep_features, const c10::Device& device) {
  if (spec.ends_with(".npz")) {
    DISTILLERY_CHECK(!keep_features, Error("this metric needs features, not only their statistics").file(spec).hint("give images or a sample source"));
    return {"statistics " + spec, {FeatureStatistics::load(spec, network.dims, network.hash), {}, {}, {}}};
  }
  const auto start = std::chrono::steady_clock::now();
  auto source = open_image_source(spec, o.sampling.resolved(), device);
  auto description = source->describe();
  auto evaluation = evaluate_source(*source, network, keep_features, o.sampling.request.batch, !o.quiet);
  return {description, std::move(evaluation), std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()};
}

void run_eval(const std::string& metric, const EvalOptions& o) {
  const auto device = make_runtime(o.device).device;
  const auto network = o.features == "inception" ? inception_feature_network(o.inception, device) : domain_feature_network(o.classifier, device);
  DISTILLERY_CHECK(metric != "accuracy" || network.logits, Error("accuracy needs a classifier").field("--features").expected("fmnist"));
  nlohmann::json report = {{"metric", metric == "fd" && o.features == "inception" ? "fid" : metric},
                           {"features", {{"network", network.name}, {"file", network.file}, {"hash", network.hash}, {"dims", network.dims}}},
                           {"images", "uint8 as a saved PNG holds them (generated samples quantised as EDM saves images)"}};
  // Checked before the sources are read, which can take minutes.
  DISTILLERY_CHECK(metric != "stats" || o.out.ends_with(".npz"),
                   Error("unsupported output file type").field("--out").expected("a path ending in .npz").got(o.out));
  const bool needs_features = metric == "kid" || metric == "pr" || metric == "accuracy";
  std::vector<Side> sides;
  for (const auto& spec : o.sources) {
    sides.push_back(evaluate(spec, network, o, needs_features, device));
    const auto& statistics = sides.back().evaluation.statistics;
    DISTILLERY_CHECK(!(metric == "stats" || metric == "fd") || !statistics.count_known() || statistics.count() >= 2,
                     Error("too few images for a covariance").file(spec).expected("at least 2 images").got(std::to_string(statistics.count())));
  }
  for (size_t i = 0; i < sides.size(); ++i)
    report["sources"].push_back({{"source", o.sources[i]}, {"description", sides[i].description}, {"n", sides[i].evaluation.statistics.count_known() ? nlohmann::json(sides[i].evaluation.statistics.count()) : nlohmann::json(nullptr)},
                                 {"seconds", sides[i].seconds}});
  if (metric == "stats") {
    sides[0].evaluation.statistics.save(o.out, network.hash);
    report["out"] = o.out;
  } else if (metric == "fd") {
    report["value"] = frechet_distance(sides[0].evaluation.statistics, sides[1].evaluation.statistics);
    report["protocol"] = o.features == "inception"
                             ? "FID as pytorch-fid computes it: /255, bilinear resize to 299 (align_corners false), 2x−1, pool3 features, float64 statistics"
                             : "FD_fmnist: Fréchet distance of float64 statistics of the domain classifier's penultimate features";
  } else if (metric == "kid") {
    const auto kid = kernel_inception_distance(sides[0].evaluation.features, sides[1].evaluation.features, o.kid_subsets, o.kid_subset_size);
    report["value"] = kid.mean;
    report["std"] = kid.std;
    report["protocol"] = fmt::format("unbiased MMD², kernel (xᵀy/d + 1)³, {} subsets of {}", kid.subsets, kid.subset_size);
  } else if (metric == "pr") {
    const auto pr = precision_recall(sides[0].evaluation.features, sides[1].evaluation.features, o.k);
    report["precision"] = pr.precision;
    report["recall"] = pr.recall;
    report["protocol"] = fmt::format("k-NN manifolds (Kynkäänniemi et al. 2019), k = {}; first source = real", pr.k);
  } else if (metric == "accuracy") {
    const auto& e = sides[0].evaluation;
    const auto labelled = e.labels.ge(0);
    DISTILLERY_CHECK(labelled.any().item<bool>(), Error("the source has no labels to check").got(sides[0].description));
    report["value"] = classification_accuracy(e.logits.index_select(0, labelled.nonzero().flatten()), e.labels.index_select(0, labelled.nonzero().flatten()));
    report["protocol"] = "share of labelled images the classifier assigns to their label";
  }
  std::printf("%s\n", report.dump(2).c_str());
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto* classifier = app.add_subcommand("classifier", "the Fashion-MNIST domain classifier (FD_fmnist features, accuracy)");
  classifier->require_subcommand(1);
  add_training_subcommand(*classifier, "train it from a YAML recipe; writes classifier.safetensors (with its test accuracy) in --out",
                          "configs/eval/fmnist_classifier.yaml", [](const TrainingRunOptions& o) { train_domain_classifier(o); });

  auto* eval = app.add_subcommand("eval", "metrics between image sources in the domain classifier's features; prints JSON");
  eval->require_subcommand(1);
  const struct {
    const char* name;
    const char* help;
    size_t sources;
  } metrics[] = {{"stats", "feature statistics (mu, sigma) of one source into --out FILE.npz", 1},
                 {"fd", "Fréchet distance (FD_fmnist) between two sources or .npz statistics", 2},
                 {"kid", "kernel inception distance (mean and std over subsets) between two sources", 2},
                 {"pr", "precision and recall of the second source against the first (real)", 2},
                 {"accuracy", "share of a labelled source's images the classifier assigns to their label", 1}};
  for (const auto& m : metrics) {
    auto options = std::make_shared<EvalOptions>();
    auto* cmd = eval->add_subcommand(m.name, m.help);
    cmd->add_option("sources", options->sources, "image sources: " + image_source_forms() + (m.sources == 2 ? "; or .npz statistics for fd" : ""))
        ->required()->expected(static_cast<int>(m.sources));
    cmd->add_option("--features", options->features, "feature network: fmnist (the domain classifier) or inception (pytorch-fid's FID Inception)")
        ->check(CLI::IsMember({"fmnist", "inception"}))->capture_default_str();
    cmd->add_option("--classifier", options->classifier, "domain classifier weights")->capture_default_str();
    cmd->add_option("--inception", options->inception, "FID Inception weights in safetensors (tools/convert_inception.py)")->capture_default_str();
    cmd->add_flag("--quiet", options->quiet, "no progress bars");
    add_sampling_options(*cmd, options->sampling);
    add_device_option(*cmd, options->device);
    if (std::string(m.name) == "stats") cmd->add_option("--out", options->out, "statistics file (.npz, pytorch-fid/EDM layout)")->required();
    if (std::string(m.name) == "kid") {
      cmd->add_option("--subsets", options->kid_subsets, "random subsets")->check(count_check())->capture_default_str();
      cmd->add_option("--subset-size", options->kid_subset_size, "features per subset")->check(count_check())->capture_default_str();
    }
    if (std::string(m.name) == "pr") cmd->add_option("--k", options->k, "nearest neighbour defining the manifold radius")->check(count_check())->capture_default_str();
    cmd->callback([name = std::string(m.name), options] { run_eval(name, *options); });
  }
}

}  // namespace distillery
