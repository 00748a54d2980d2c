// defines: teacher_training_schema, train_teacher
// EDM teacher training (Karras et al. 2022, section 5): σ log-normal with P_mean/P_std, the
// loss weight λ(σ) = (σ² + σ_d²)/(σ·σ_d)², Adam with linear warm-up, an EMA with a half-life
// in images — a method of the shared trainer (train/trainer.h), which also gives it cosine
// decay, in-loop FD (eval.*) and exact resume. Every random draw at step s is a function of
// (seed, s), so a run that is stopped and resumed reproduces the uninterrupted run bit for bit (CPU).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "train/run_options.h"

namespace distillery {

class ConfigSchema;
const ConfigSchema& teacher_training_schema();

// Writes out_dir/{config.json, stats.jsonl, checkpoints/step-NNNNNNN/, grids/, teacher.safetensors}.
void train_teacher(const TrainingRunOptions& options);

}  // namespace distillery
