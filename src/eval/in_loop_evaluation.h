// defines: add_in_loop_evaluation_fields, make_in_loop_evaluation, make_trainer_callbacks
// The trainer's in-loop evaluation (TrainerCallbacks::evaluate) from the eval.* keys: the
// Fréchet distance of generated samples in the domain classifier's features (fd_fmnist) or in
// their raw values (fd_raw, against a mixture's exact moments or a .npz), and the class
// accuracy of labelled images. Under a launch of several processes each draws its share of the
// samples and the features are gathered, in sample order, for the statistics.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/runtime.h"
#include "train/trainer.h"

namespace distillery {

class Config;
class ConfigSchema;

// eval.reference, eval.features, eval.classifier.
void add_in_loop_evaluation_fields(ConfigSchema& schema);

// The callback for a network of `sample_shape` on the runtime's device, called by every
// process of the runtime's group alike; loads the reference statistics and the feature network
// once. Errors name the key.
EvaluationCallback make_in_loop_evaluation(const Config& config, const std::vector<int64_t>& sample_shape, const Runtime& runtime);

// What a training command hands the trainer: sample grids, and the evaluation when eval.every > 0.
TrainerCallbacks make_trainer_callbacks(const Config& config, const std::vector<int64_t>& sample_shape, const Runtime& runtime);

}  // namespace distillery
