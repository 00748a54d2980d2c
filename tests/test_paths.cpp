// The build's absolute paths (the only test file compiled with them; see test_support.h).
#include "test_support.h"

namespace distillery::testing {

const char* const kBuildPython = DISTILLERY_TEST_PYTHON;
const char* const kBuildSourceDir = DISTILLERY_TEST_SOURCE_DIR;
const char* const kBuildCli = DISTILLERY_TEST_CLI;

}  // namespace distillery::testing
