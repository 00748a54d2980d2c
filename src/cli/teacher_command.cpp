// `distillery teacher train`: EDM training of a teacher from a YAML recipe; the options every
// training command shares.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <memory>

#include "cli/commands.h"
#include "cli/device_option.h"
#include "core/runtime.h"
#include "teacher_training/teacher_training.h"

namespace distillery {

void add_training_subcommand(CLI::App& parent, const std::string& description, const std::string& example_config,
                             std::function<void(const TrainingRunOptions&)> run) {
  add_training_options(*parent.add_subcommand("train", description), example_config, std::move(run));
}

void add_training_options(CLI::App& train, const std::string& example_config, std::function<void(const TrainingRunOptions&)> run) {
  auto options = std::make_shared<TrainingRunOptions>();
  auto device = std::make_shared<std::string>();
  train.add_option("--config", options->config_file, "YAML recipe, e.g. " + example_config)->required()->check(CLI::ExistingFile);
  train.add_option("--out", options->out_dir, "run directory")->required();
  train.add_option("--set", options->overrides, "override a recipe key: --set train.steps=100 (repeatable)");
  train.add_flag("--resume", options->resume, "continue from the newest valid checkpoint in --out");
  train.add_flag("--allow-changed-inputs", options->allow_changed_inputs, "with --resume: go on although an input of the run (the teacher) differs from the one it started with");
  add_device_option(train, *device);
  add_memory_check_option(train, options->check_memory);
  train.callback([options, device, run = std::move(run)] {
    options->runtime = make_runtime(*device, Launch::multi_process);
    // Rank 0 reports the run; the others speak only of what goes wrong.
    if (options->runtime.rank > 0) spdlog::set_level(spdlog::level::warn);
    run(*options);
  });
}

void add_teacher_command(CLI::App& app) {
  auto* teacher = app.add_subcommand("teacher", "train teachers");
  teacher->require_subcommand(1);
  add_training_subcommand(*teacher, "EDM training of a UNet or MLP teacher; checkpoints, stats.jsonl and sample grids in --out",
                          "configs/teacher/fmnist.yaml", [](const TrainingRunOptions& o) { train_teacher(o); });
}

}  // namespace distillery
