#include "data/label_policy.h"

#include <fmt/format.h>

#include <charconv>

#include "core/error.h"

namespace distillery {

std::vector<int64_t> labels_for(const std::string& policy, int64_t num_classes, const std::vector<int64_t>& sample_indices) {
  if (num_classes == 0) {
    DISTILLERY_CHECK(policy.empty(), Error("this model is unconditional and takes no labels").field("--labels").got(policy));
    return {};
  }
  const std::string chosen = policy.empty() ? "all" : policy;
  if (chosen == "none") return std::vector<int64_t>(sample_indices.size(), -1);
  std::vector<int64_t> classes;
  if (chosen != "all") {
    for (size_t start = 0; start <= chosen.size();) {
      const size_t comma = std::min(chosen.find(',', start), chosen.size());
      const std::string_view item(chosen.data() + start, comma - start);
      int64_t value = -1;
      const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), value);
      DISTILLERY_CHECK(ec == std::errc() && end == item.data() + item.size() && value >= 0 && value < num_classes,
                       Error(fmt::format("bad label '{}'", item))
                           .field("--labels")
                           .expected(fmt::format("'all', 'none', a class in 0..{}, or a comma-separated list of them", num_classes - 1))
                           .got(chosen));
      classes.push_back(value);
      start = comma + 1;
    }
  }
  std::vector<int64_t> labels;
  labels.reserve(sample_indices.size());
  for (int64_t index : sample_indices)
    labels.push_back(classes.empty() ? index % num_classes : classes[static_cast<size_t>(index) % classes.size()]);
  return labels;
}

}  // namespace distillery
