// defines: ReportOptions, run_report
// A student against its teacher on Fashion-MNIST: FD_fmnist, class accuracy and
// precision/recall of `num` samples per side (the teacher's from its trajectory store, the
// student's from the same seed, indices and classes), images/s, parameter counts, and side-by-side grids:
// report.md, report.json, comparison.png, teacher.png, student.png in `out`.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <optional>
#include <string>

namespace distillery {

struct ReportOptions {
  std::string teacher;  // the teacher spec; its side of the report is `store`'s samples
  std::string student;  // a student file or a distillation run directory
  std::string store;    // the teacher's trajectory store
  std::string out;      // report directory
  std::string classifier = "assets/eval/fmnist-classifier.safetensors", reference = "assets/eval/fmnist-test.npz";
  int64_t num = 500, speed_batch = 64, speed_rounds = 3;
  std::optional<int> steps;  // the student's step count: its own, or another its file offers
  c10::Device device = c10::Device(c10::DeviceType::CPU);
};

void run_report(const ReportOptions& options);

}  // namespace distillery
