// defines: teacher_training_schema, TeacherTrainingOptions, train_teacher
// EDM teacher training (Karras et al. 2022, section 5): σ log-normal with P_mean/P_std, the
// loss weight λ(σ) = (σ² + σ_d²)/(σ·σ_d)², Adam with linear warm-up, an EMA with a half-life
// in images. Every random draw at step s is a function of (seed, s), so a run that is
// stopped and resumed from a checkpoint reproduces the uninterrupted run bit for bit (CPU).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace distillery {

class ConfigSchema;
const ConfigSchema& teacher_training_schema();

struct TeacherTrainingOptions {
  std::filesystem::path config_file;   // YAML recipe
  std::vector<std::string> overrides;  // --set key=value
  std::filesystem::path out_dir;
  bool resume = false;                 // continue from the newest valid checkpoint in out_dir
  bool show_progress = true;
};

// Writes out_dir/{config.json, stats.jsonl, checkpoints/step-NNNNNNN/, grids/, teacher.safetensors}.
void train_teacher(const TeacherTrainingOptions& options);

}  // namespace distillery
