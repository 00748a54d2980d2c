// defines: make_sample_grid_writer
// The trainer's sample grids (TrainerCallbacks::grid): an image grid for image samples, a
// scatter plot for 2-D points (the analytic mixture), nothing for other shapes.
#pragma once

#include <cstdint>
#include <vector>

#include "train/trainer.h"

namespace distillery {

GridCallback make_sample_grid_writer(const std::vector<int64_t>& sample_shape);

}  // namespace distillery
