// `distillery record`: teacher trajectories into a sharded HDF5 store; `distillery inspect`:
// validate a store and summarise it.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <cstdio>
#include <memory>

#include "cli/number_checks.h"
#include "cli/commands.h"
#include "cli/device_option.h"
#include "core/process_group.h"
#include "core/runtime.h"
#include "cli/sampling_options.h"
#include "core/error.h"
#include "core/progress.h"
#include "teachers/teacher.h"
#include "trajectories/recorder.h"
#include "trajectories/straightness.h"
#include "trajectories/trajectory_store.h"

namespace distillery {

namespace {

struct RecordCliOptions {
  RecordOptions record;
  SamplingCliOptions sampling;
  std::string part = "0/1", device;
};

void run_record(RecordCliOptions& cli) {
  auto& o = cli.record;
  o.request = cli.sampling.resolved();
  int64_t part = -1, parts = -1;
  {
    // from_chars, unlike sscanf, reports a number beyond int64 instead of clamping it.
    const auto slash = cli.part.find('/');
    const auto whole_number = [&](size_t begin, size_t end, int64_t& value) {
      const auto [rest, problem] = std::from_chars(cli.part.data() + begin, cli.part.data() + end, value);
      return problem == std::errc() && rest == cli.part.data() + end && begin < end;
    };
    DISTILLERY_CHECK(slash != std::string::npos && whole_number(0, slash, part) && whole_number(slash + 1, cli.part.size(), parts),
                     Error("bad part").field("--part").expected("i/n with whole numbers that fit in 64 bits, e.g. 0/4").got(cli.part));
  }
  // Under torchrun each process records its own part (no data are exchanged; the group only
  // lets rank 0 report the whole store once every part has finished).
  const auto runtime = make_runtime(cli.device, Launch::multi_process);
  if (runtime.world_size > 1) {
    DISTILLERY_CHECK(parts == 1, Error("--part and a launch of several processes both divide the shards").field("--part").got(cli.part)
                                     .hint("drop --part: under torchrun process RANK records part RANK/WORLD_SIZE"));
    part = runtime.rank;
    parts = runtime.world_size;
  }
  o.part = part;
  o.parts = parts;
  o.device = runtime.device;
  spdlog::info("recording {} trajectories from {} with {} ({} steps, seed {}, store {}) into {}{}", o.request.num, o.teacher, o.request.sampler,
               o.request.steps, o.request.seed, o.store, o.out.string(), o.parts > 1 ? fmt::format(", part {}/{}", o.part, o.parts) : "");
  const auto summary = record_trajectories(o);
  const double seconds = std::max(summary.seconds, 1e-9);
  spdlog::info("{} shards written, {} already there; {} trajectories in {:.1f} s ({:.1f}/s), {:.1f}% of the time waiting for HDF5 and "
               "manifest writes (writing itself: {:.1f}%, overlapped with sampling), peak RSS {:.0f} MiB",
               summary.shards_written, summary.shards_already_done, summary.trajectories_written, summary.seconds,
               static_cast<double>(summary.trajectories_written) / seconds, 100.0 * summary.io_seconds / seconds,
               100.0 * summary.write_seconds / seconds, static_cast<double>(summary.max_rss_kb) / 1024.0);
  if (runtime.world_size > 1) {
    runtime.processes().barrier("the end of every part's recording");
    if (runtime.rank == 0) spdlog::info("all {} parts recorded: the store in {} is complete", runtime.world_size, o.out.string());
  }
}

}  // namespace

void add_record_command(CLI::App& app) {
  auto cli = std::make_shared<RecordCliOptions>();
  auto& o = cli->record;
  cli->sampling.request.num = 1000;
  auto* cmd = app.add_subcommand("record", "record teacher ODE trajectories into a resumable, sharded HDF5 store (see docs/formats.md)");
  cmd->add_option("--teacher", o.teacher, "the teacher: " + teacher_forms())->required();
  cmd->add_option("--out", o.out, "store directory (store.json, shard-NNNNNN.h5, manifest.jsonl, stats.jsonl)")->required();
  add_sampling_options(*cmd, cli->sampling);
  cmd->add_option("--store", o.store, "states kept per trajectory: full (all steps+1), endpoints (noise and sample), every:K")->capture_default_str();
  cmd->add_flag("--denoised", o.denoised, "also store the teacher's D(x; σ) at every stored state with σ > 0");
  cmd->add_option("--dtype", o.dtype, "storage type of states")->check(CLI::IsMember({"float32", "float16"}))->capture_default_str();
  cmd->add_option("--compression", o.compression, "deflate level with the shuffle filter (0 = none; float data gains little)")
      ->check(CLI::Range(0, 9))->capture_default_str();
  cmd->add_option("--shard-size", o.shard_size, "trajectories per shard (a kill loses at most one shard's work)")->check(count_check())->capture_default_str();
  cmd->add_option("--part", cli->part, "record only shards k with k mod n = i; parts may run at once on machines sharing --out (under torchrun: RANK/WORLD_SIZE)")->capture_default_str();
  cmd->add_flag("--resume", o.resume, "complete the store already in --out (only missing shards are recorded)");
  add_device_option(*cmd, cli->device);
  add_cuda_graph_option(*cmd, cli->record.cuda_graph);
  cmd->callback([cli] { run_record(*cli); });
}

void add_inspect_command(CLI::App& app) {
  auto dir = std::make_shared<std::string>();
  auto straightness = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("inspect", "validate a trajectory store (counts, gaps, duplicates, checksums, attributes) and summarise it");
  cmd->add_option("dir", *dir, "store directory")->required();
  cmd->add_flag("--straightness", *straightness, "also measure the trajectories' straightness S(Z) (Liu et al. 2023; 0: straight lines) over every trajectory");
  cmd->callback([dir, straightness] {
    const auto report = inspect_store(*dir);
    std::fputs(report.summary().c_str(), stdout);
    for (const auto& note : report.notes) std::printf("note: %s\n", note.c_str());
    for (const auto& problem : report.problems) std::printf("problem: %s\n", problem.c_str());
    if (!report.problems.empty()) throw Error(fmt::format("{} has {} problem(s)", *dir, report.problems.size()));
    if (!*straightness) return;
    require_intermediate_states(static_cast<int64_t>(report.settings->stored_steps.size()));
    StoreStraightness measured;
    {
      Progress progress("straightness", report.trajectories_present, "traj");
      measured = store_straightness(*dir, &progress);
    }
    std::printf("straightness S(Z): %.6g ± %.2g over %lld trajectories of %lld stored states (rectified-flow coordinates)\n", measured.mean,
                measured.standard_error, static_cast<long long>(measured.trajectories), static_cast<long long>(measured.states));
  });
}

}  // namespace distillery
