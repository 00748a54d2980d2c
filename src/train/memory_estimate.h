// defines: training_memory
// What a training run adds to its device's memory once it steps, so that a train.batch far
// beyond the machine is refused before the first step instead of ending in the OOM killer.
#pragma once

#include <cstdint>
#include <vector>

#include "core/memory_check.h"

namespace distillery {

class TrainingMethod;

// The optimised modules' gradients and optimiser state (Adam's two moments, the most any
// optimiser keeps), and the activations a step keeps for its backward passes: the bytes one
// differentiated evaluation of the generator allocates per row (measured on up to 16 rows),
// times the rows and the method's activation_memory_factor().
std::vector<MemoryPart> training_memory(TrainingMethod& method, int64_t batch);

}  // namespace distillery
