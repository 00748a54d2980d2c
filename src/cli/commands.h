// defines: add_training_subcommand, add_training_options, add_distill_command, add_sample_command, add_teacher_command, add_record_command, add_inspect_command, add_eval_command, add_plot_command
// Each subcommand registers its options and its action on the top-level CLI11 app.
#pragma once

#include <functional>
#include <string>

#include "train/run_options.h"

namespace CLI { class App; }

namespace distillery {

// `PARENT train --config --out --set --resume`, running `run` with the parsed options.
void add_training_subcommand(CLI::App& parent, const std::string& description, const std::string& example_config,
                             std::function<void(const TrainingRunOptions&)> run);
// --config --out --set --resume on an existing command.
void add_training_options(CLI::App& command, const std::string& example_config, std::function<void(const TrainingRunOptions&)> run);
void add_sample_command(CLI::App& app);
void add_distill_command(CLI::App& app);  // `distill` and `generate`
void add_teacher_command(CLI::App& app);
void add_record_command(CLI::App& app);
void add_inspect_command(CLI::App& app);
void add_eval_command(CLI::App& app);  // `classifier train` and `eval`
void add_plot_command(CLI::App& app);

}  // namespace distillery
