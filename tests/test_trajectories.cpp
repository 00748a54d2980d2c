// Trajectory recording: stored states equal the sampler's, kills and resumes give the same
// store byte for byte, parts recorded at once equal one process's store, and every kind of
// damage is reported by name by `inspect` and by the reader.
#include <gtest/gtest.h>
#include <malloc.h>
#include <signal.h>
#include <sys/wait.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <numeric>
#include <random>
#include <set>

#include "core/error.h"
#include "core/memory_check.h"
#include "core/rng.h"
#include "io/directory_lock.h"
#include "io/hdf5.h"
#include "io/tensor_file.h"
#include "models/network_denoiser.h"
#include "samplers/sampling.h"
#include "teachers/gaussian_mixture.h"
#include "teachers/teacher.h"
#include "test_support.h"
#include "trajectories/recorder.h"
#include "trajectories/straightness.h"
#include "trajectories/trajectory_reader.h"
#include "trajectories/trajectory_store.h"

namespace distillery {
namespace {

using testing::shell_quoted;

std::filesystem::path write_mixture(const std::filesystem::path& dir, const std::string& text = testing::kThreeModes2d) {
  const auto path = dir / "mixture.yaml";
  std::ofstream(path) << text;
  return path;
}

RecordOptions small_recording(const std::string& teacher, const std::filesystem::path& out) {
  RecordOptions o;
  o.teacher = teacher;
  o.out = out;
  o.request.num = 50;
  o.request.batch = 7;  // batches straddle shard boundaries' sizes on purpose
  o.request.steps = 12;
  o.request.seed = 5;
  o.shard_size = 16;
  o.show_progress = false;
  return o;
}

// Every state and denoised value the sampler produced, collected in memory.
struct InMemory final : SamplerObserver {
  std::vector<at::Tensor> states, denoised;
  void on_state(int64_t, double sigma, const at::Tensor& x, const at::Tensor& d) override {
    states.push_back(x.clone());
    if (sigma > 0) denoised.push_back(d.clone());
  }
};

TEST(Record, StoredStatesAreTheSamplersAndTheLastIsWhatSampleDraws) {
  const auto dir = testing::scratch_dir();
  const std::string teacher = "gmm:" + write_mixture(dir).string();
  auto o = small_recording(teacher, dir / "store");
  o.denoised = true;
  const auto summary = record_trajectories(o);
  EXPECT_EQ(summary.shards_written, 4);
  EXPECT_EQ(summary.trajectories_written, 50);

  TrajectoryReader reader(dir / "store", {.teacher_hash = teacher_fingerprint(teacher), .sample_shape = {2}, .denoised = true});
  std::vector<int64_t> all(50);
  std::iota(all.begin(), all.end(), 0);
  const auto stored = reader.trajectories(all);
  const auto stored_denoised = reader.denoised(all);
  EXPECT_EQ(stored.sizes(), (std::vector<int64_t>{50, 13, 2}));
  EXPECT_EQ(stored_denoised.sizes(), (std::vector<int64_t>{50, 12, 2}));

  auto mixture = load_teacher(teacher, torch::kCPU);
  BatchSampler sampler(*mixture, o.request);
  InMemory observed;
  const auto batch = sampler.run(all, &observed);
  EXPECT_TRUE(torch::equal(stored, torch::stack(observed.states, 1)));
  EXPECT_TRUE(torch::equal(stored_denoised, torch::stack(observed.denoised, 1)));
  EXPECT_EQ(reader.sigmas(), sampler.sigmas());

  // The CLI's `sample` with the same seed draws the same last states.
  const auto sample_file = dir / "samples.safetensors";
  const auto result = testing::run_command(testing::kCli + " sample --teacher " + shell_quoted(teacher) +
                                           " --steps 12 --seed 5 --num 50 --out " + shell_quoted(sample_file));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto pairs = reader.pairs(all);
  EXPECT_TRUE(torch::equal(pairs.sample, load_tensor_file(sample_file).get("samples")));
  EXPECT_TRUE(torch::allclose(pairs.noise, load_tensor_file(sample_file).get("noise"), 1e-6, 1e-6));
  EXPECT_TRUE(torch::equal(pairs.labels, torch::full({50}, -1, torch::kInt64)));
}

// A store's settings and the sampling request that recorded it are one mapping, both ways.
TEST(Record, StoreSettingsGiveBackTheRequestThatRecordedThem) {
  SampleRequest r;
  r.sampler = "edm-stochastic";
  r.steps = 7;
  r.schedule = ScheduleKind::LogLinear;
  r.rho = 5;
  r.options = {.s_churn = 3, .s_tmin = 0.1, .s_tmax = 20, .s_noise = 1.01};
  r.labels = "2";
  r.guidance = 1.5;
  r.seed = 11;
  r.num = 33;
  StoreSettings settings;
  set_sampling_request(settings, r, {ScheduleKind::LogLinear, 0.01, 50, 5});
  const auto back = sampling_request(settings);
  EXPECT_EQ(back.sampler, r.sampler);
  EXPECT_EQ(back.steps, r.steps);
  EXPECT_EQ(back.schedule, r.schedule);
  EXPECT_EQ(back.rho, r.rho);
  EXPECT_EQ(back.sigma_min, 0.01);
  EXPECT_EQ(back.sigma_max, 50);
  EXPECT_EQ(back.options.s_churn, 3);
  EXPECT_EQ(back.options.s_tmin, 0.1);
  EXPECT_EQ(back.options.s_tmax, 20);
  EXPECT_EQ(back.options.s_noise, 1.01);
  EXPECT_EQ(back.labels, r.labels);
  EXPECT_EQ(back.guidance, r.guidance);
  EXPECT_EQ(back.seed, r.seed);
  EXPECT_EQ(back.num, r.num);
}

TEST(Record, StoreModesKeepTheirStatesAndHalfPrecisionIsCloseToFull) {
  const auto dir = testing::scratch_dir();
  const std::string teacher = "gmm:" + write_mixture(dir).string();
  EXPECT_EQ(stored_steps_for("every:5", 12), (std::vector<int64_t>{0, 5, 10, 12}));
  EXPECT_EQ(stored_steps_for("endpoints", 12), (std::vector<int64_t>{0, 12}));
  EXPECT_THROW(stored_steps_for("every:0", 12), Error);
  EXPECT_THROW(stored_steps_for("some", 12), Error);

  auto full = small_recording(teacher, dir / "full");
  record_trajectories(full);
  auto every = small_recording(teacher, dir / "every");
  every.store = "every:5";
  every.dtype = "float16";
  every.compression = 4;
  record_trajectories(every);
  std::vector<int64_t> some = {0, 17, 49};
  const auto reference = TrajectoryReader(dir / "full").trajectories(some);
  TrajectoryReader half(dir / "every");
  const auto kept = torch::tensor(std::vector<int64_t>{0, 5, 10, 12});
  const auto expected = reference.index_select(1, kept);
  const auto got = half.trajectories(some);
  EXPECT_EQ(got.sizes(), expected.sizes());
  // float16 keeps 11 significant bits: relative error ≤ 2^-11 of each value.
  EXPECT_LE(((got - expected).abs() - expected.abs() * std::ldexp(1.0, -11)).max().item<double>(), 1e-6);
  EXPECT_EQ(half.sigmas(), (std::vector<double>{full.request.sigma_max.value_or(80.0), half.settings().sigmas[5], half.settings().sigmas[10], 0.0}));

  // Random state pairs: i < j within one trajectory, reproducible from the seed.
  TrajectoryReader reader(dir / "full");
  const auto pairs = reader.state_pairs(some, 9), again = reader.state_pairs(some, 9);
  EXPECT_TRUE(torch::equal(pairs.x_i, again.x_i));
  EXPECT_TRUE((pairs.sigma_i > pairs.sigma_j).all().item<bool>());
  const auto sigmas = torch::tensor(reader.sigmas(), torch::kFloat64);
  for (int64_t k = 0; k < 3; ++k) {
    const auto i = (sigmas == pairs.sigma_i[k]).nonzero().item<int64_t>();
    EXPECT_TRUE(torch::equal(pairs.x_i[k], reference[k][i]));
  }
  // Shuffled batches visit every trajectory once per epoch.
  std::set<int64_t> seen;
  for (int64_t b = 0; b < 5; ++b)
    for (auto index : reader.batch_indices(b, 10, 3)) seen.insert(index);
  EXPECT_EQ(seen.size(), 50u);
}

pid_t spawn(const std::string& command) {
  const pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + command + " >/dev/null 2>&1").c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

int wait_for(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

// A small UNet teacher makes recording slow enough (tens of ms per shard) to be killed mid-way.
std::string unet_teacher(const std::filesystem::path& dir) {
  UNetConfig c;
  c.model_channels = 8;
  c.channel_mult = {1, 2};
  c.blocks_per_level = 1;
  c.attn_resolutions = {};
  c.resolution = 16;
  torch::manual_seed(0);
  NetworkDenoiser D(c);
  D.save(dir / "teacher.safetensors");
  return (dir / "teacher.safetensors").string();
}

constexpr int64_t kRecorded = 240, kShardSize = 8, kShards = kRecorded / kShardSize;

std::string record_command(const std::string& teacher, const std::filesystem::path& out, const std::string& extra = "") {
  return testing::kCli + " record --teacher " + shell_quoted(teacher) + " --out " + shell_quoted(out) + " --num " + std::to_string(kRecorded) +
         " --shard-size " + std::to_string(kShardSize) + " --batch 8 --steps 6 --sampler euler --seed 2 " + extra;
}

std::multiset<std::string> manifest_lines(const std::filesystem::path& dir) {
  std::multiset<std::string> lines;
  std::ifstream in(dir / "manifest.jsonl");
  for (std::string line; std::getline(in, line);) lines.insert(line);
  return lines;
}

// Same settings, same manifest lines (in any order) and byte-identical shards.
void expect_same_store(const std::filesystem::path& a, const std::filesystem::path& b) {
  EXPECT_EQ(testing::file_bytes(a / "store.json"), testing::file_bytes(b / "store.json"));
  EXPECT_EQ(manifest_lines(a), manifest_lines(b));
  for (const auto& entry : read_manifest(a)) EXPECT_TRUE(testing::file_bytes(a / entry.file) == testing::file_bytes(b / entry.file)) << entry.file << " differs";
}

TEST(Record, KilledAtRandomMomentsAndResumedItEqualsAnUninterruptedRun) {
  const auto dir = testing::scratch_dir();
  const auto teacher = unet_teacher(dir);
  const auto start = std::chrono::steady_clock::now();
  const auto straight = testing::run_command(record_command(teacher, dir / "straight"));
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  const auto duration_ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();

  // Kill moments spread over a whole run, start-up included. Each resumed run continues where
  // the last stopped, so the window for the next kill shrinks with the work left (shards not
  // yet in the manifest): the kills keep landing before the store completes even when the
  // runs are faster than the straight one was (a machine whose load changed).
  std::mt19937 random(12345);
  const auto shards_left = [&] {
    std::ifstream manifest(dir / "killed/manifest.jsonl");
    int64_t done = 0;
    for (std::string line; std::getline(manifest, line);) ++done;
    return static_cast<double>(kShards - done) / kShards;
  };
  int kills = 0;
  for (int attempt = 0; attempt < 20 && kills < 5; ++attempt) {
    std::uniform_int_distribution<int> delay_ms(100, std::max(150, static_cast<int>(static_cast<double>(duration_ms) * shards_left() / 4)));
    const pid_t pid = spawn(record_command(teacher, dir / "killed", "--resume"));
    usleep(static_cast<useconds_t>(delay_ms(random)) * 1000);
    if (::kill(pid, SIGKILL) == 0 && wait_for(pid) == -SIGKILL) ++kills;
    // Whatever the moment, every file under a final name is a complete HDF5 file (a kill
    // during start-up leaves no directory yet).
    if (!std::filesystem::exists(dir / "killed")) continue;
    for (const auto& item : std::filesystem::directory_iterator(dir / "killed")) {
      const auto name = item.path().filename().string();
      if (name.starts_with("shard-")) {
        EXPECT_NO_THROW(H5File::open_read_only(item.path())) << name << " after kill " << kills;
      }
    }
  }
  EXPECT_GE(kills, 5) << "the recording finished before it could be killed five times";
  const auto finished = testing::run_command(record_command(teacher, dir / "killed", "--resume"));
  ASSERT_EQ(finished.exit_code, 0) << finished.output;
  expect_same_store(dir / "straight", dir / "killed");
  const auto report = inspect_store(dir / "killed");
  EXPECT_TRUE(report.problems.empty()) << report.problems.front();
}

TEST(Record, PartsRecordedAtOnceMakeTheSameStoreAsOneProcess) {
  const auto dir = testing::scratch_dir();
  const auto teacher = unet_teacher(dir);
  ASSERT_EQ(testing::run_command(record_command(teacher, dir / "one")).exit_code, 0);
  const pid_t first = spawn(record_command(teacher, dir / "parts", "--part 0/2"));
  const pid_t second = spawn(record_command(teacher, dir / "parts", "--part 1/2"));
  EXPECT_EQ(wait_for(first), 0);
  EXPECT_EQ(wait_for(second), 0);
  expect_same_store(dir / "one", dir / "parts");
  EXPECT_EQ(read_manifest(dir / "parts").size(), 30u);
  // What reflow and the other store readers train on: the pairs of the pieces are one store's.
  TrajectoryReader one(dir / "one"), parts(dir / "parts");
  const auto order = one.batch_indices(3, kRecorded, 11);
  EXPECT_EQ(order, parts.batch_indices(3, kRecorded, 11));
  const auto a = one.pairs(order), b = parts.pairs(order);
  EXPECT_TRUE(torch::equal(a.noise, b.noise) && torch::equal(a.sample, b.sample) && torch::equal(a.labels, b.labels));
}

// Two recordings of the same part would both record every shard and list each twice: the
// second is refused while the first holds the part's lock.
TEST(Record, ASecondRecordingOfTheSamePartIsRefusedWithTheHoldersPid) {
  const auto dir = testing::scratch_dir();
  const auto teacher = unet_teacher(dir);
  {
    const DirectoryLock first(dir / "store", ".lock-part-0-of-1", "recording of part 0/1");
    const auto refused = testing::run_command(record_command(teacher, dir / "store", "--resume"));
    EXPECT_EQ(refused.exit_code, 1) << refused.output;
    EXPECT_NE(refused.output.find("another process is writing to this directory"), std::string::npos) << refused.output;
    EXPECT_NE(refused.output.find(fmt::format("a recording of part 0/1 by PID {} holds", ::getpid())), std::string::npos) << refused.output;
    EXPECT_FALSE(std::filesystem::exists(dir / "store/manifest.jsonl"));
    // Another part of the same store is not held up.
    const auto other_part = testing::run_command(record_command(teacher, dir / "store", "--part 1/2"));
    EXPECT_EQ(other_part.exit_code, 0) << other_part.output;
  }
  const auto finished = testing::run_command(record_command(teacher, dir / "store", "--part 0/2"));
  EXPECT_EQ(finished.exit_code, 0) << finished.output;
  EXPECT_EQ(read_manifest(dir / "store").size(), static_cast<size_t>(kShards));
}

// A write that fails for want of space (here the file-size limit, which fails a write as a
// full disk does) is one error naming the shard, without HDF5's own diagnostics or a crash,
// and the store resumes to the uninterrupted one.
TEST(Record, AFullDiskIsAnErrorAndTheStoreResumesWhenThereIsSpace) {
  const auto dir = testing::scratch_dir();
  const auto teacher = unet_teacher(dir);
  ASSERT_EQ(testing::run_command(record_command(teacher, dir / "straight")).exit_code, 0);
  // 40 blocks (20 or 40 KiB, as the shell counts them): the small files fit, a shard does not.
  const auto full = testing::run_command("trap '' XFSZ; ulimit -f 40; " + record_command(teacher, dir / "store"));
  EXPECT_EQ(full.exit_code, 1) << full.output;
  EXPECT_NE(full.output.find("\n  file: " + (dir / "store/.shard-000000.h5.tmp.").string()), std::string::npos) << full.output;
  EXPECT_NE(full.output.find("\n  got: file write failed: " + std::string(std::strerror(EFBIG)) + "\n  hint: make room"), std::string::npos) << full.output;
  EXPECT_EQ(full.output.find("HDF5-DIAG"), std::string::npos) << full.output;
  const auto resumed = testing::run_command(record_command(teacher, dir / "store", "--resume"));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  expect_same_store(dir / "straight", dir / "store");
}

std::string all_problems(const StoreReport& report) {
  std::string text;
  for (const auto& p : report.problems) text += p + "\n";
  return text;
}

std::string reader_error(const std::filesystem::path& dir, const StoreExpectation& expect = {}) {
  try {
    TrajectoryReader reader(dir, expect);
    std::vector<int64_t> all(static_cast<size_t>(reader.size()));
    std::iota(all.begin(), all.end(), 0);
    reader.trajectories(all);
  } catch (const Error& e) {
    return e.what();
  }
  return "(accepted)";
}

void rewrite_manifest(const std::filesystem::path& dir, const std::vector<ShardEntry>& entries) {
  std::filesystem::remove(dir / "manifest.jsonl");
  for (const auto& e : entries) append_manifest(dir, e);
}

TEST(Inspect, EachKindOfDamageIsNamedByInspectAndByTheReader) {
  const auto dir = testing::scratch_dir();
  const std::string teacher = "gmm:" + write_mixture(dir).string();
  record_trajectories(small_recording(teacher, dir / "good"));
  EXPECT_TRUE(inspect_store(dir / "good").problems.empty());
  EXPECT_NE(inspect_store(dir / "good").summary().find("50 of 50 in 4 of 4 shards"), std::string::npos);
  const auto copy = [&](const std::string& name) {
    std::filesystem::copy(dir / "good", dir / name, std::filesystem::copy_options::recursive);
    return dir / name;
  };

  // A flipped byte in the data of a shard.
  const auto corrupt = copy("corrupt");
  {
    std::fstream f(corrupt / "shard-000001.h5", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(std::filesystem::file_size(corrupt / "shard-000001.h5") / 2));
    f.put('\x7f');
  }
  const auto corrupt_problems = all_problems(inspect_store(corrupt));
  EXPECT_NE(corrupt_problems.find("shard checksum mismatch (the file is corrupt)\n  file: " + (corrupt / "shard-000001.h5").string()), std::string::npos)
      << corrupt_problems;
  EXPECT_NE(reader_error(corrupt).find("checksum mismatch"), std::string::npos) << reader_error(corrupt);

  // A manifest whose last line a kill cut short.
  const auto torn = copy("torn");
  {
    auto text = testing::file_bytes(torn / "manifest.jsonl");
    text.resize(text.size() - 30);
    std::ofstream(torn / "manifest.jsonl", std::ios::trunc) << text;
  }
  const auto torn_problems = all_problems(inspect_store(torn));
  EXPECT_NE(torn_problems.find("manifest.jsonl line 4 is not a complete entry"), std::string::npos) << torn_problems;
  EXPECT_NE(torn_problems.find("incomplete: 1 of 4 shards"), std::string::npos) << torn_problems;
  EXPECT_NE(reader_error(torn).find("line 4 is not a complete entry"), std::string::npos) << reader_error(torn);
  // Resuming repairs it: the torn line is cut off and its shard recorded again.
  auto resume = small_recording(teacher, torn);
  resume.resume = true;
  EXPECT_EQ(record_trajectories(resume).shards_written, 1);
  EXPECT_EQ(all_problems(inspect_store(torn)), "");
  expect_same_store(dir / "good", torn);

  // A shard recorded from another teacher, listed with its true size and checksum.
  std::filesystem::create_directories(dir / "other");
  const std::string other_teacher = "gmm:" + write_mixture(dir / "other", std::string(testing::kThreeModes2d) + "sigma_max: 60\n").string();
  auto other = small_recording(other_teacher, dir / "other-store");
  record_trajectories(other);
  const auto foreign = copy("foreign");
  std::filesystem::copy_file(dir / "other-store/shard-000002.h5", foreign / "shard-000002.h5", std::filesystem::copy_options::overwrite_existing);
  auto entries = read_manifest(foreign);
  for (auto& e : entries)
    if (e.shard == 2) e = read_manifest(dir / "other-store")[2];
  rewrite_manifest(foreign, entries);
  const auto foreign_problems = all_problems(inspect_store(foreign));
  EXPECT_NE(foreign_problems.find("recorded with other settings"), std::string::npos) << foreign_problems;
  EXPECT_NE(foreign_problems.find("teacher_hash"), std::string::npos) << foreign_problems;
  EXPECT_NE(reader_error(foreign).find("recorded with other settings"), std::string::npos) << reader_error(foreign);

  // The reader refuses a store made from another teacher than the caller's, or not finished.
  EXPECT_NE(reader_error(dir / "good", {.teacher_hash = teacher_fingerprint(other_teacher)}).find("recorded from another teacher"), std::string::npos);
  EXPECT_NE(reader_error(dir / "good", {.sample_shape = {1, 28, 28}}).find("samples of another shape"), std::string::npos);
  EXPECT_NE(reader_error(dir / "good", {.denoised = true}).find("holds no denoised states"), std::string::npos);
  const auto partial = copy("partial");
  entries = read_manifest(partial);
  entries.pop_back();
  rewrite_manifest(partial, entries);
  EXPECT_NE(reader_error(partial).find("incomplete: 1 of 4 shards are missing"), std::string::npos) << reader_error(partial);
  EXPECT_NE(all_problems(inspect_store(partial)).find("shards 3"), std::string::npos);
  EXPECT_NE(reader_error(dir / "nothing").find("no store.json"), std::string::npos);

  // Recording into an existing store: only with --resume, and only with the same settings.
  auto again = small_recording(teacher, dir / "good");
  testing::expect_error_mentioning<Error>([&] { record_trajectories(again); }, {"--resume"});
  again.resume = true;
  again.request.seed = 6;
  testing::expect_error_mentioning<Error>([&] { record_trajectories(again); }, {"seed: 5 vs 6"});
}

TEST(Inspect, CommandLineSummaryAndExitCode) {
  const auto dir = testing::scratch_dir();
  const std::string teacher = "gmm:" + write_mixture(dir).string();
  record_trajectories(small_recording(teacher, dir / "store"));
  auto result = testing::run_command(testing::kCli + " inspect " + shell_quoted(dir / "store"));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("heun, 12 steps (23 NFE)"), std::string::npos) << result.output;
  std::filesystem::remove(dir / "store/shard-000000.h5");
  result = testing::run_command(testing::kCli + " inspect " + shell_quoted(dir / "store"));
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("shard listed in the manifest is missing"), std::string::npos) << result.output;
}

// Straight paths at constant speed in rectified-flow coordinates score 0. A Gaussian's flow is
// curved: for data N(0, s²) the state at σ is c·√(s² + σ²), so Z(τ) = c·g(τ) with
// g(τ) = √(s²τ² + (1 − τ)²), and S = ‖c‖²·∫(g′ − ḡ)² dτ / span, ḡ the mean slope: the measure on
// a dense σ grid matches that integral, taken independently with g′ in closed form (Simpson).
TEST(Straightness, ZeroForStraightPathsAndTheIntegralOfAGaussiansCurvedFlow) {
  constexpr int64_t T = 4001;
  const double tau0 = 1.0 / 81.0;
  std::vector<double> sigmas(T), taus(T);
  for (int64_t i = 0; i < T; ++i) {
    taus[i] = tau0 + (1.0 - tau0) * static_cast<double>(i) / (T - 1);
    sigmas[i] = (1.0 - taus[i]) / taus[i];
  }
  const auto tau = torch::tensor(taus, torch::kFloat64).view({1, T, 1}), sigma = torch::tensor(sigmas, torch::kFloat64).view({1, T, 1});
  const auto a = torch::tensor({3.0, -1.0}, torch::kFloat64).view({1, 1, 2}), b = torch::tensor({-0.5, 2.0}, torch::kFloat64).view({1, 1, 2});
  const auto straight = (a + tau * (b - a)) / tau;  // x = Z/τ
  EXPECT_LT(trajectory_straightness(straight, sigmas).item<double>(), 1e-18);

  const double s = 0.5;
  const auto c = torch::tensor({1.0, 2.0}, torch::kFloat64).view({1, 1, 2});
  const auto gaussian = c * (s * s + sigma.square()).sqrt();
  const auto g = [&](double t) { return std::sqrt(s * s * t * t + (1 - t) * (1 - t)); };
  const double mean_slope = (g(1.0) - g(tau0)) / (1.0 - tau0);
  const auto integrand = [&](double t) {
    const double slope = (s * s * t - (1 - t)) / g(t);
    return (slope - mean_slope) * (slope - mean_slope);
  };
  constexpr int kIntervals = 20000;  // even, for Simpson's rule
  const double h = (1.0 - tau0) / kIntervals;
  double integral = integrand(tau0) + integrand(1.0);
  for (int i = 1; i < kIntervals; ++i) integral += (i % 2 ? 4 : 2) * integrand(tau0 + i * h);
  integral *= h / 3;
  const double expected = 5.0 * integral / (1.0 - tau0);  // ‖c‖² = 5
  const double measured = trajectory_straightness(gaussian, sigmas).item<double>();
  std::printf("straightness of the Gaussian flow: measured %.8f, integral %.8f\n", measured, expected);
  EXPECT_GT(expected, 0.1);
  EXPECT_NEAR(measured, expected, 1e-4 * expected);
  EXPECT_THROW(trajectory_straightness(gaussian, {80.0, 0.0}), Error);
  EXPECT_THROW(trajectory_straightness(gaussian.narrow(1, 0, 2), {sigmas[0], sigmas[1]}), Error);  // endpoints alone
}

// `inspect --straightness` reads every trajectory of a store: its figure is the mean of the
// per-trajectory measure over what the reader gives.
TEST(Inspect, StraightnessOfAStoreIsTheMeanOverItsTrajectories) {
  const auto dir = testing::scratch_dir();
  record_trajectories(small_recording("gmm:" + write_mixture(dir).string(), dir / "store"));
  const auto result = testing::run_command(testing::kCli + " inspect --straightness " + shell_quoted(dir / "store"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto at = result.output.find("straightness S(Z): ");
  ASSERT_NE(at, std::string::npos) << result.output;
  const double printed = std::stod(result.output.substr(at + 19));
  TrajectoryReader reader(dir / "store");
  std::vector<int64_t> all(static_cast<size_t>(reader.size()));
  std::iota(all.begin(), all.end(), 0);
  const double mean = trajectory_straightness(reader.trajectories(all), reader.sigmas()).mean().item<double>();
  EXPECT_NEAR(printed, mean, 1e-5 * mean);
  EXPECT_NE(result.output.find("over 50 trajectories of 13 stored states"), std::string::npos) << result.output;
}

// A training step's reading holds what its batch needs, whatever the store's size: ten batches
// from a store ten times larger allocate the same tensor memory (their rows, and the epoch's
// order, drawn once), and the heap the open reader keeps (a few open shards and their caches)
// does not grow with it. Measured: tensors 2.63 and 2.65 MB, heap 2.2 MB for both; drawing the
// order afresh for every batch made the larger store's ten reads allocate 1.07× as much (2.83 MB).
TEST(TrajectoryReader, ReadingMemoryStaysFlatAsTheStoreGrowsTenfold) {
  const auto dir = testing::scratch_dir();
  const auto row = [](double value) { return fmt::format("[{}]", fmt::join(std::vector<double>(256, value), ", ")); };
  std::ofstream(dir / "images.yaml") << "shape: [1, 16, 16]\nweights: [1, 1]\nmeans: [" << row(-0.5) << ", " << row(0.5) << "]\nstds: [0.2, 0.2]\n";
  const c10::Device cpu(c10::DeviceType::CPU);
  struct Use {
    uint64_t tensor_bytes;
    int64_t heap_bytes;
  };
  const auto reading = [&](int64_t num) {
    auto o = small_recording("gmm:" + (dir / "images.yaml").string(), dir / fmt::format("store-{}", num));
    o.request.num = num;
    o.request.batch = 256;
    o.request.steps = 4;
    o.store = "endpoints";
    o.shard_size = 64;
    record_trajectories(o);
    const auto heap_before = static_cast<int64_t>(mallinfo2().uordblks);
    std::unique_ptr<TrajectoryReader> reader;
    int64_t heap_held = 0;
    const auto tensor_bytes = allocated_bytes(cpu, [&] {
      reader = std::make_unique<TrajectoryReader>(o.out);
      for (int64_t b = 0; b < 10; ++b) reader->pairs(reader->batch_indices(b, 64, 7));
      heap_held = static_cast<int64_t>(mallinfo2().uordblks) - heap_before;
    });
    return Use{tensor_bytes, heap_held};
  };
  const auto small = reading(256), large = reading(2560);
  std::printf("ten batches of 64: tensors %.2f MB and %.2f MB, reader's heap %.2f MB and %.2f MB, from 256 and 2,560 trajectories\n", small.tensor_bytes / 1e6,
              large.tensor_bytes / 1e6, small.heap_bytes / 1e6, large.heap_bytes / 1e6);
  EXPECT_LT(static_cast<double>(large.tensor_bytes), 1.05 * static_cast<double>(small.tensor_bytes));
  EXPECT_LT(large.heap_bytes, small.heap_bytes + (1 << 20));
}

TEST(Record, PythonReadsWhatWeWroteWithH5py) {
  if (!testing::python_available()) GTEST_SKIP() << "no project Python (run tools/bootstrap.sh)";
  const auto dir = testing::scratch_dir();
  const std::string teacher = "gmm:" + write_mixture(dir).string();
  for (const std::string dtype : {"float32", "float16"}) {
    auto o = small_recording(teacher, dir / dtype);
    o.dtype = dtype;
    o.denoised = true;
    record_trajectories(o);
    const auto dump = dir / (dtype + ".safetensors");
    const auto result = testing::run_command(testing::kPython + " " + shell_quoted(testing::kSourceDir / "tools/read_trajectories.py") + " " +
                                             shell_quoted(dir / dtype) + " --dump " + shell_quoted(dump));
    ASSERT_EQ(result.exit_code, 0) << result.output;
    TrajectoryReader reader(dir / dtype);
    std::vector<int64_t> all(50);
    std::iota(all.begin(), all.end(), 0);
    const auto python = load_tensor_file(dump);
    EXPECT_TRUE(torch::equal(python.get("x"), reader.trajectories(all))) << dtype;
    EXPECT_TRUE(torch::equal(python.get("denoised"), reader.denoised(all))) << dtype;
    EXPECT_TRUE(torch::equal(python.get("sample_index"), torch::arange(50, torch::kInt64)));
    EXPECT_TRUE(torch::equal(python.get("sigmas"), torch::tensor(reader.sigmas(), torch::kFloat64)));
  }
}

}  // namespace
}  // namespace distillery
