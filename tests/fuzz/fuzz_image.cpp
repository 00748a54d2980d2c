// Any byte string, read as an image file (PNG or JPEG by its signature, through libpng and
// libjpeg-turbo), must either decode into pixels that fill width × height × channels exactly,
// within the pixel bound, or be rejected with distillery::Error; anything else (a crash, a
// sanitizer report, a leak of the decoders' state on an error path, another exception type) is
// a bug.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "core/error.h"
#include "io/image_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;  // fmemopen refuses an empty buffer
  std::FILE* file = fmemopen(const_cast<uint8_t*>(data), size, "rb");
  if (!file) std::abort();
  try {
    const auto image = distillery::decode_image(file, "fuzz");
    if (image.channels != 1 && image.channels != 3) std::abort();
    if (image.width * image.height > distillery::kMaxImagePixels) std::abort();
    if (static_cast<int64_t>(image.pixels.size()) != image.width * image.height * image.channels) std::abort();
  } catch (const distillery::Error&) {
  }
  std::fclose(file);
  return 0;
}
