#include "trajectories/trajectory_reader.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "core/hash.h"
#include "data/shuffled_order.h"
#include "io/hdf5.h"

namespace distillery {

namespace {
constexpr size_t kMaxOpenShards = 4;

int64_t sample_numel(const StoreSettings& s) {
  return std::accumulate(s.sample_shape.begin(), s.sample_shape.end(), int64_t{1}, std::multiplies<>());
}

std::vector<int64_t> with_leading(std::initializer_list<int64_t> leading, const std::vector<int64_t>& shape) {
  std::vector<int64_t> out(leading);
  out.insert(out.end(), shape.begin(), shape.end());
  return out;
}
}  // namespace

TrajectoryReader::TrajectoryReader(const std::filesystem::path& dir, const StoreExpectation& expect) : dir_(dir) {
  settings_ = read_store_settings(dir);
  if (!expect.teacher_hash.empty())
    DISTILLERY_CHECK(expect.teacher_hash == settings_.teacher_hash,
                     Error("the trajectory store was recorded from another teacher").file(dir.string())
                         .expected("teacher hash " + expect.teacher_hash).got(fmt::format("teacher hash {} ({})", settings_.teacher_hash, settings_.teacher)));
  if (!expect.sample_shape.empty())
    DISTILLERY_CHECK(expect.sample_shape == settings_.sample_shape,
                     Error("the trajectory store holds samples of another shape").file(dir.string())
                         .expected(fmt::format("[{}]", fmt::join(expect.sample_shape, ", "))).got(fmt::format("[{}]", fmt::join(settings_.sample_shape, ", "))));
  DISTILLERY_CHECK(!expect.denoised || settings_.denoised,
                   Error("the trajectory store holds no denoised states").file(dir.string()).hint("record it with --denoised"));

  std::vector<std::string> problems;
  const auto listed = read_manifest(dir, &problems);
  DISTILLERY_CHECK(problems.empty(), Error(problems.front()).file((dir / "manifest.jsonl").string()).hint("`distillery inspect` lists every problem"));
  entries_.resize(static_cast<size_t>(settings_.shard_count()));
  std::vector<bool> seen(entries_.size(), false);
  for (const auto& e : listed) {
    DISTILLERY_CHECK(e.shard >= 0 && e.shard < settings_.shard_count() && e.first_index == settings_.shard_first(e.shard) &&
                         e.count == settings_.shard_length(e.shard),
                     Error(fmt::format("manifest line for {} does not fit the store's layout", e.file)).file((dir / "manifest.jsonl").string()));
    entries_[static_cast<size_t>(e.shard)] = e;
    seen[static_cast<size_t>(e.shard)] = true;
  }
  const auto missing = std::count(seen.begin(), seen.end(), false);
  DISTILLERY_CHECK(missing == 0, Error(fmt::format("the trajectory store is incomplete: {} of {} shards are missing", missing, seen.size()))
                                     .file(dir.string()).hint("complete it with `distillery record ... --resume`"));
  verified_.assign(entries_.size(), false);
}

TrajectoryReader::~TrajectoryReader() = default;

const H5File& TrajectoryReader::shard_file(int64_t shard) {
  ++uses_;
  for (auto& open : open_)
    if (open.shard == shard) {
      open.last_use = uses_;
      return *open.file;
    }
  const auto& entry = entries_[static_cast<size_t>(shard)];
  if (!verified_[static_cast<size_t>(shard)]) {
    verify_shard(dir_, entry, settings_);
    verified_[static_cast<size_t>(shard)] = true;
  }
  if (open_.size() >= kMaxOpenShards) {
    const auto oldest = std::min_element(open_.begin(), open_.end(), [](const auto& a, const auto& b) { return a.last_use < b.last_use; });
    open_.erase(oldest);
  }
  open_.push_back({shard, std::make_unique<H5File>(H5File::open_read_only(dir_ / entry.file)), uses_});
  return *open_.back().file;
}

void TrajectoryReader::read_row(const std::string& dataset, int64_t index, float* out) {
  DISTILLERY_CHECK(index >= 0 && index < settings_.num,
                   Error(fmt::format("trajectory index {} is out of range", index)).file(dir_.string()).expected(fmt::format("0..{}", settings_.num - 1)));
  const int64_t shard = index / settings_.shard_size;
  shard_file(shard).read_rows(dataset, H5Type::F32, static_cast<uint64_t>(index - settings_.shard_first(shard)), 1, out);
}

at::Tensor TrajectoryReader::trajectories(const std::vector<int64_t>& indices) {
  const auto T = static_cast<int64_t>(settings_.stored_steps.size());
  auto out = torch::empty(with_leading({static_cast<int64_t>(indices.size()), T}, settings_.sample_shape), torch::kFloat32);
  const int64_t row = T * sample_numel(settings_);
  for (size_t k = 0; k < indices.size(); ++k) read_row("x", indices[k], out.data_ptr<float>() + static_cast<int64_t>(k) * row);
  return out;
}

at::Tensor TrajectoryReader::denoised(const std::vector<int64_t>& indices) {
  DISTILLERY_CHECK(settings_.denoised, Error("the trajectory store holds no denoised states").file(dir_.string()).hint("record it with --denoised"));
  const int64_t states = settings_.denoised_states();
  auto out = torch::empty(with_leading({static_cast<int64_t>(indices.size()), states}, settings_.sample_shape), torch::kFloat32);
  const int64_t row = states * sample_numel(settings_);
  for (size_t k = 0; k < indices.size(); ++k) read_row("denoised", indices[k], out.data_ptr<float>() + static_cast<int64_t>(k) * row);
  return out;
}

at::Tensor TrajectoryReader::labels(const std::vector<int64_t>& indices) {
  auto out = torch::empty({static_cast<int64_t>(indices.size())}, torch::kInt64);
  for (size_t k = 0; k < indices.size(); ++k) {
    const int64_t index = indices[k];
    DISTILLERY_CHECK(index >= 0 && index < settings_.num, Error(fmt::format("trajectory index {} is out of range", index)).file(dir_.string()));
    const int64_t shard = index / settings_.shard_size;
    shard_file(shard).read_rows("labels", H5Type::I64, static_cast<uint64_t>(index - settings_.shard_first(shard)), 1,
                                out.data_ptr<int64_t>() + k);
  }
  return out;
}

TrajectoryReader::Pairs TrajectoryReader::pairs(const std::vector<int64_t>& indices) {
  const auto x = trajectories(indices);
  const auto T = x.size(1);
  return {x.select(1, 0) / settings_.sigmas.front(), x.select(1, T - 1).clone(), labels(indices)};
}

TrajectoryReader::StatePairs TrajectoryReader::state_pairs(const std::vector<int64_t>& indices, uint64_t seed) {
  const auto x = trajectories(indices);
  const auto T = x.size(1);
  const auto sigmas = settings_.stored_sigmas();
  const auto n = static_cast<int64_t>(indices.size());
  auto i = torch::empty({n}, torch::kInt64), j = torch::empty({n}, torch::kInt64);
  for (int64_t k = 0; k < n; ++k) {
    auto generator = at::make_generator<at::CPUGeneratorImpl>(fnv1a64(fmt::format("{}:pair:{}", seed, indices[static_cast<size_t>(k)])));
    // An unordered pair of distinct states, uniformly: draw two and order them.
    const auto draw = std::get<0>(torch::randperm(T, generator, torch::kInt64).slice(0, 0, 2).sort());
    i[k] = draw[0];
    j[k] = draw[1];
  }
  const auto rows = torch::arange(n, torch::kInt64);
  const auto sigma_table = torch::tensor(sigmas, torch::kFloat64);
  return {sigma_table.index_select(0, i), x.index({rows, i}), sigma_table.index_select(0, j), x.index({rows, j}), labels(indices)};
}

std::vector<int64_t> TrajectoryReader::batch_indices(int64_t batch_number, int64_t batch_size, uint64_t seed) {
  // The epoch's permutation is kept: drawn afresh for every batch, it cost each training step
  // time and memory in proportion to the store's size.
  if (!order_ || order_seed_ != seed) {
    order_.emplace(kept_rows_ ? static_cast<int64_t>(kept_rows_->size()) : settings_.num, seed);
    order_seed_ = seed;
  }
  std::vector<int64_t> out;
  for (int64_t p = batch_number * batch_size; p < (batch_number + 1) * batch_size; ++p) {
    const auto position = order_->at(p);
    out.push_back(kept_rows_ ? (*kept_rows_)[static_cast<size_t>(position)] : position);
  }
  return out;
}

void TrajectoryReader::keep_classes(const std::vector<int64_t>& classes) {
  std::vector<int64_t> rows, labels;
  for (int64_t shard = 0; shard < settings_.shard_count(); ++shard) {
    const auto first = settings_.shard_first(shard);
    labels.resize(static_cast<size_t>(std::min(settings_.shard_size, settings_.num - first)));
    shard_file(shard).read_rows("labels", H5Type::I64, 0, labels.size(), labels.data());
    for (size_t k = 0; k < labels.size(); ++k)
      if (std::find(classes.begin(), classes.end(), labels[k]) != classes.end()) rows.push_back(first + static_cast<int64_t>(k));
  }
  DISTILLERY_CHECK(!rows.empty(), Error("the store holds no trajectory of the student's classes").file(dir_.string())
                                      .expected(fmt::format("labels among [{}]", fmt::join(classes, ", ")))
                                      .hint("record the store with --labels all"));
  kept_rows_ = std::move(rows);
  order_.reset();
}

}  // namespace distillery
