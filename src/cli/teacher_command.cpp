// `distillery teacher train`: EDM training of a UNet teacher from a YAML recipe.
#include <CLI/CLI.hpp>
#include <memory>

#include "cli/commands.h"
#include "teachers/teacher_training.h"

namespace distillery {

void add_teacher_command(CLI::App& app) {
  auto* teacher = app.add_subcommand("teacher", "train teachers");
  teacher->require_subcommand(1);
  auto options = std::make_shared<TeacherTrainingOptions>();
  auto* train = teacher->add_subcommand("train", "EDM training of a UNet teacher; checkpoints, stats.jsonl and sample grids in --out");
  train->add_option("--config", options->config_file, "YAML recipe, e.g. configs/teacher/fmnist.yaml")->required()->check(CLI::ExistingFile);
  train->add_option("--out", options->out_dir, "run directory")->required();
  train->add_option("--set", options->overrides, "override a recipe key: --set train.steps=100 (repeatable)");
  train->add_flag("--resume", options->resume, "continue from the newest valid checkpoint in --out");
  train->callback([options] { train_teacher(*options); });
}

}  // namespace distillery
