// defines: FeatureTap, FeatureMap, FeatureVisitor
// Named places inside a network whose intermediate features others read: discriminator heads
// (DMD2's GAN branch on the critic, ADD's and LADD's per-layer heads) and feature distances.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace distillery {

struct FeatureTap {
  std::string name;             // "enc.2", "bottleneck", "dec.0", "layer.1", ...
  std::vector<int64_t> shape;   // per sample: [C, H, W] for images, [D] for vectors
};

using FeatureMap = std::map<std::string, at::Tensor>;  // tap name -> [N, *shape]

// Handed each tap's features in network order while a pass runs; returns false once it
// wants nothing deeper, which ends the pass there.
using FeatureVisitor = std::function<bool(const std::string& tap, const at::Tensor& features)>;

}  // namespace distillery
