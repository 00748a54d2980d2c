#include "distill/common/real_data_stream.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include "core/config.h"
#include "core/error.h"
#include "data/augment.h"

namespace distillery {

RealDataStream::RealDataStream(const Config& config, const std::vector<int64_t>& sample_shape, int64_t num_classes, uint64_t flip_stream,
                               const c10::Device& device, const std::vector<int64_t>& classes)
    : data_(load_training_data(config, sample_shape)), num_classes_(num_classes), flip_stream_(flip_stream), hflip_(config.get_bool("data.hflip")),
      device_(device) {
  const std::vector<int64_t> shape(data_.x0.sizes().begin() + 1, data_.x0.sizes().end());
  DISTILLERY_CHECK(shape == sample_shape, Error("the real data do not have the student's shape").field("data.dataset").got(fmt::format("[{}]", fmt::join(shape, ", ")))
                                              .expected(fmt::format("[{}]", fmt::join(sample_shape, ", "))));
  DISTILLERY_CHECK(num_classes == 0 || (data_.labels.min().item<int64_t>() >= 0 && data_.labels.max().item<int64_t>() < num_classes),
                   Error("a class-conditional network needs every real image labelled with one of its classes").field("data.path")
                       .expected(fmt::format("labels 0..{}", num_classes - 1))
                       .got(fmt::format("{}..{}", data_.labels.min().item<int64_t>(), data_.labels.max().item<int64_t>()))
                       .hint("a folder needs a dataset.json with its labels"));
  DISTILLERY_CHECK(!hflip_ || shape.size() == 3, Error("horizontal flips need image data").field("data.hflip"));
  if (num_classes > 0 && !classes.empty() && static_cast<int64_t>(classes.size()) < num_classes) {
    const auto kept = torch::isin(data_.labels, torch::tensor(classes, torch::kInt64).to(data_.labels.device())).nonzero().squeeze(1);
    DISTILLERY_CHECK(kept.numel() > 0, Error("the real data hold no example of the student's classes").file(config.source()).field("data.dataset")
                                           .expected(fmt::format("examples labelled {}", fmt::join(classes, ", "))));
    data_.x0 = data_.x0.index_select(0, kept);
    data_.labels = data_.labels.index_select(0, kept);
  }
  order_.emplace(data_.x0.size(0), static_cast<uint64_t>(config.get_int("train.seed")));
}

std::pair<at::Tensor, at::Tensor> RealDataStream::batch(uint64_t seed, const std::vector<int64_t>& positions) {
  std::vector<int64_t> indices;
  for (const auto p : positions) indices.push_back(order_->at(p));
  const auto index = torch::tensor(indices, torch::kInt64);
  auto x = data_.x0.index_select(0, index).to(device_);
  if (hflip_) x = hflip_per_sample(x, seed, flip_stream_, positions);
  return {x, num_classes_ > 0 ? data_.labels.index_select(0, index).to(device_) : at::Tensor()};
}

}  // namespace distillery
