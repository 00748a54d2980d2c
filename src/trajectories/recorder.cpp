#include "trajectories/recorder.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <torch/types.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>

#include "core/error.h"
#include "core/memory_check.h"
#include "core/progress.h"
#include "data/label_policy.h"
#include "io/directory_lock.h"
#include "io/atomic_file.h"
#include "models/cuda_graph_denoiser.h"
#include "samplers/sampler.h"
#include "teachers/teacher.h"
#include "trajectories/trajectory_store.h"

namespace distillery {

namespace {

using Clock = std::chrono::steady_clock;

// Keeps the states of the stored grid indices (and the denoiser's output there).
class StateCollector final : public SamplerObserver {
 public:
  StateCollector(const StoreSettings& settings, Denoiser& model, at::Tensor labels)
      : settings_(settings), model_(model), labels_(std::move(labels)),
        states_(settings.stored_steps.size()), denoised_(static_cast<size_t>(settings.denoised_states())) {}

  void on_state(int64_t i, double sigma, const at::Tensor& x, const at::Tensor& denoised) override {
    const auto it = std::find(settings_.stored_steps.begin(), settings_.stored_steps.end(), i);
    if (it == settings_.stored_steps.end()) return;
    const auto position = static_cast<size_t>(it - settings_.stored_steps.begin());
    states_[position] = x.to(torch::kCPU, torch::kFloat32, /*non_blocking=*/false, /*copy=*/true);
    if (settings_.denoised && sigma > 0) {
      // Solvers that did not evaluate D at exactly this state (stochastic churn) cost one extra evaluation here.
      denoised_[position] = (denoised.defined() ? denoised : denoise_at(model_, x, sigma, labels_)).to(torch::kCPU, torch::kFloat32, /*non_blocking=*/false, /*copy=*/true);
    }
  }

  at::Tensor states() const { return torch::stack(states_, 1); }
  at::Tensor denoised() const { return torch::stack(denoised_, 1); }

 private:
  const StoreSettings& settings_;
  Denoiser& model_;
  at::Tensor labels_;
  std::vector<at::Tensor> states_, denoised_;
};

StoreSettings settings_for(const RecordOptions& o, const Denoiser& teacher, const BatchSampler& sampler) {
  StoreSettings s;
  s.teacher = o.teacher;
  s.teacher_hash = teacher_fingerprint(o.teacher);
  s.sample_shape = teacher.sample_shape();
  s.num_classes = teacher.num_classes();
  set_sampling_request(s, o.request, resolve_schedule(o.request, teacher));
  // A conditional teacher recorded without a label policy cycles through its classes.
  if (teacher.num_classes() > 0 && o.request.labels.empty()) s.labels = "all";
  s.shard_size = o.shard_size;
  s.store = o.store;
  s.denoised = o.denoised;
  s.dtype = o.dtype;
  s.compression = o.compression;
  s.sigmas = sampler.sigmas();
  s.stored_steps = stored_steps_for(o.store, o.request.steps);
  return s;
}

void check_options(const RecordOptions& o) {
  DISTILLERY_CHECK(o.request.num > 0, Error("the number of trajectories must be positive").field("--num").got(std::to_string(o.request.num)));
  DISTILLERY_CHECK(o.request.batch > 0, Error("the batch size must be positive").field("--batch").got(std::to_string(o.request.batch)));
  DISTILLERY_CHECK(o.request.steps > 0, Error("the number of steps must be positive").field("--steps").got(std::to_string(o.request.steps)));
  DISTILLERY_CHECK(o.shard_size > 0, Error("the shard size must be positive").field("--shard-size").got(std::to_string(o.shard_size)));
  DISTILLERY_CHECK(o.parts >= 1 && o.part >= 0 && o.part < o.parts,
                   Error("bad part").field("--part").expected("i/n with 0 ≤ i < n").got(fmt::format("{}/{}", o.part, o.parts)));
  DISTILLERY_CHECK(o.dtype == "float32" || o.dtype == "float16", Error("unsupported storage type").field("--dtype").expected("float32 or float16").got(o.dtype));
  DISTILLERY_CHECK(o.compression >= 0 && o.compression <= 9,
                   Error("bad compression level").field("--compression").expected("0 (none) to 9 (deflate)").got(std::to_string(o.compression)));
  DISTILLERY_CHECK(!o.request.float64, Error("trajectory stores hold float32 or float16 states"));
}

// Creates store.json, or checks that the store already there was recorded with these settings.
void claim_store(const RecordOptions& o, const StoreSettings& settings) {
  const auto path = o.out / "store.json";
  const auto check_existing = [&] {
    std::ifstream in(path);
    const auto existing = StoreSettings::from_json(std::string((std::istreambuf_iterator<char>(in)), {}), path.string());
    if (const auto diff = existing.difference(settings))
      throw Error("the directory holds a trajectory store recorded with other settings").file(o.out.string()).got(*diff + " (store vs this run)")
          .hint("use another --out, or repeat the original command");
  };
  if (std::filesystem::exists(path)) {
    check_existing();
    DISTILLERY_CHECK(o.resume || o.parts > 1, Error("the directory already holds a trajectory store").file(o.out.string())
                                                  .hint("pass --resume to complete it (only missing shards are recorded)"));
    return;
  }
  // Parts may start at once: the first to link its store.json wins, the others compare.
  const auto tmp = temporary_sibling(path);
  write_file_atomic(tmp, settings.to_json());
  std::error_code linked;
  std::filesystem::create_hard_link(tmp, path, linked);
  std::filesystem::remove(tmp);
  if (linked) check_existing();
}

// A shard is held on the host while its batches are sampled, once more while they are joined,
// and the previous one while the writer stores it; the batches themselves run on the device.
void require_recording_memory(const RecordOptions& o, const StoreSettings& s, BatchSampler& sampler) {
  if (!o.request.check_memory) return;
  const int64_t count = std::min(s.shard_size, s.num);
  const auto states = static_cast<int64_t>(s.stored_steps.size()) + (s.denoised ? s.denoised_states() : 0);
  const MemoryPart shards{fmt::format("trajectory shards: 3 × {} trajectories × {} states × {}", count, states, human_bytes(sampler.sample_bytes())),
                          3.0 * static_cast<double>(count * states) * sampler.sample_bytes()};
  auto on_device = sampler.working_memory(std::min(o.request.batch, count));
  const c10::Device host(c10::DeviceType::CPU);
  if (o.device == host) {
    on_device.push_back(shards);
  } else {
    require_memory({shards}, host, true, "--shard-size");
  }
  require_memory(on_device, o.device, true, "--batch or --shard-size");
}

bool owned(const RecordOptions& o, int64_t shard) { return shard % o.parts == o.part; }

}  // namespace

RecordSummary record_trajectories(const RecordOptions& o) {
  check_options(o);
  const auto start = Clock::now();
  auto teacher = load_teacher(o.teacher, o.device);
  labels_for(o.request.labels, teacher->num_classes(), {0});  // a bad policy fails before anything is written
  SampledDenoiser sampled(*teacher, o.cuda_graph);
  BatchSampler sampler(sampled.get(), o.request);
  const auto settings = settings_for(o, *teacher, sampler);
  require_recording_memory(o, settings, sampler);
  // Parts of one store run at once by design; two runs of the same part would record every
  // shard twice and list each twice in the manifest.
  const DirectoryLock lock(o.out, fmt::format(".lock-part-{}-of-{}", o.part, o.parts), fmt::format("recording of part {}/{}", o.part, o.parts));
  claim_store(o, settings);

  // Temporaries of this part's shards are leftovers of a killed run of this part.
  for (const auto& item : std::filesystem::directory_iterator(o.out)) {
    const auto name = item.path().filename().string();
    int64_t shard = -1;
    if (name.starts_with(".shard-") && std::sscanf(name.c_str(), ".shard-%ld.h5.tmp", &shard) == 1 && owned(o, shard))
      std::filesystem::remove(item.path());
  }
  std::set<int64_t> done;
  for (const auto& entry : read_manifest(o.out)) {
    // A listed shard that is gone or was cut short is recorded again.
    const auto path = o.out / entry.file;
    if (std::filesystem::exists(path) && std::filesystem::file_size(path) == entry.bytes) done.insert(entry.shard);
  }
  std::vector<int64_t> todo;
  int64_t total = 0, already = 0;
  RecordSummary summary;
  for (int64_t k = 0; k < settings.shard_count(); ++k) {
    if (!owned(o, k)) continue;
    total += settings.shard_length(k);
    if (done.count(k)) {
      already += settings.shard_length(k);
      ++summary.shards_already_done;
    } else {
      todo.push_back(k);
    }
  }
  if (already > 0) spdlog::info("{}: {} of {} trajectories of this part already recorded", o.out.string(), already, total);

  std::ofstream stats(o.out / "stats.jsonl", std::ios::app);
  Progress progress("record", total, "traj", o.show_progress ? stderr : nullptr, already);
  // Shard k is written (HDF5, fsyncs, manifest) on a second thread while shard k+1 is sampled,
  // so a cheap teacher is not held up by the disk; at most two shards are in memory.
  std::future<double> writing;
  const auto wait_for_writer = [&] {
    if (!writing.valid()) return;
    const auto wait_start = Clock::now();
    summary.write_seconds += writing.get();  // rethrows a failed write here
    summary.io_seconds += std::chrono::duration<double>(Clock::now() - wait_start).count();
  };
  for (const int64_t shard : todo) {
    const auto shard_start = Clock::now();
    const int64_t first = settings.shard_first(shard), count = settings.shard_length(shard);
    std::vector<at::Tensor> states, denoised, labels;
    for (int64_t b = 0; b < count; b += o.request.batch) {
      std::vector<int64_t> indices(static_cast<size_t>(std::min(o.request.batch, count - b)));
      std::iota(indices.begin(), indices.end(), first + b);
      const auto label_values = labels_for(o.request.labels, teacher->num_classes(), indices);
      const auto batch_labels = label_values.empty() ? at::Tensor() : torch::tensor(label_values, torch::kInt64).to(o.device);
      StateCollector collector(settings, sampler.model(), batch_labels);
      const auto batch = sampler.run(indices, &collector);
      states.push_back(collector.states());
      if (o.denoised) denoised.push_back(collector.denoised());
      labels.push_back(torch::tensor(recorded_labels(settings, indices), torch::kInt64));
      progress.advance(static_cast<int64_t>(indices.size()));
    }
    ShardContents contents{torch::cat(states), o.denoised ? torch::cat(denoised) : at::Tensor(),
                           torch::arange(first, first + count, torch::kInt64), torch::cat(labels)};
    const double sampling_seconds = std::chrono::duration<double>(Clock::now() - shard_start).count();
    wait_for_writer();
    writing = std::async(std::launch::async, [&o, &settings, shard, contents = std::move(contents)] {
      const auto write_start = Clock::now();
      append_manifest(o.out, write_shard(o.out, settings, shard, contents));
      return std::chrono::duration<double>(Clock::now() - write_start).count();
    });
    ++summary.shards_written;
    summary.trajectories_written += count;
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    summary.max_rss_kb = usage.ru_maxrss;
    stats << nlohmann::json{{"shard", shard},
                            {"count", count},
                            {"part", fmt::format("{}/{}", o.part, o.parts)},
                            {"sampling_seconds", sampling_seconds},
                            {"trajectories_per_s", static_cast<double>(count) / std::chrono::duration<double>(Clock::now() - shard_start).count()},
                            {"max_rss_mb", static_cast<double>(usage.ru_maxrss) / 1024.0},
                            {"timestamp", std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count()}}
                 .dump()
          << "\n" << std::flush;
  }
  wait_for_writer();
  progress.finish();
  if (const auto graphs = sampled.summary(); !graphs.empty()) spdlog::info("{}", graphs);
  summary.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return summary;
}

}  // namespace distillery
