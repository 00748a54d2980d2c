// defines: labels_for
// The `--labels` policy for conditional models: "all" (sample i gets class i mod classes),
// "none" (label −1 for every sample: the unconditional branch a model learns through label
// dropout), one class ("3"), or a list ("0,2,5", cycled over samples).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace distillery {

// Labels for the given sample indices; Error when the policy is malformed or a class is out of
// range. num_classes 0 (unconditional) accepts only an empty policy and returns no labels.
std::vector<int64_t> labels_for(const std::string& policy, int64_t num_classes, const std::vector<int64_t>& sample_indices);

}  // namespace distillery
