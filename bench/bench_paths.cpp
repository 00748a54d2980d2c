// The checkout's absolute path (the only benchmark file compiled with it; see bench_main.cpp).
extern const char* const kBenchSourceDir;
const char* const kBenchSourceDir = DISTILLERY_BENCH_SOURCE_DIR;
