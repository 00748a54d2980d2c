// defines: Progress
// A progress bar with rate and ETA on a terminal; periodic log lines otherwise, so CI logs
// and redirected runs still show progress without carriage-return noise.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace distillery {

class Progress {
 public:
  // `unit` names what is counted ("img", "step"); output goes to stderr unless given a stream.
  // `already_done` (a resumed job's finished work) counts toward the total but not the rate.
  Progress(std::string label, int64_t total, std::string unit = "it", std::FILE* stream = stderr, int64_t already_done = 0);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void advance(int64_t n = 1);
  void finish();  // final line with the total time; called by the destructor if not before

  // "12.3 img/s" and "01:02:03"-style helpers, public so tests can check the formatting.
  static std::string format_duration(double seconds);
  static std::string format_rate(double per_second, const std::string& unit);

 private:
  void render(bool final_line);

  std::string label_, unit_;
  int64_t total_, done_, initial_;
  std::FILE* stream_;
  bool interactive_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_, last_render_;
};

}  // namespace distillery
