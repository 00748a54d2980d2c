// defines: DecodedImage, kMaxImagePixels, decode_image_file, decode_image, encode_png
// PNG and JPEG files to pixels and pixels to PNG, through libpng and libjpeg-turbo: the
// decoders PIL uses (so images read here equal what pytorch-fid and EDM's dataset tool read),
// without an image framework's dependencies (the CLI stays portable to machines that lack them).
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace distillery {

// Rows of `width` pixels, `channels` bytes each (1: grey, 3: RGB), top row first.
struct DecodedImage {
  int64_t height = 0, width = 0, channels = 0;
  std::vector<uint8_t> pixels;
};

// 8192 × 8192: beyond any dataset a diffusion model is trained on, and 200 MB as RGB.
inline constexpr int64_t kMaxImagePixels = int64_t{1} << 26;

// A PNG or JPEG (told by its first bytes) as PIL's Image.open gives it (no EXIF rotation), then
// as convert("RGB") would see it: 8-bit grey as one channel, colour (palette images expanded)
// as three in RGB order, alpha dropped. Errors name the file: not a PNG/JPEG, damaged, more
// than kMaxImagePixels (checked from the header, before anything is allocated), 16 bits per
// channel, CMYK.
DecodedImage decode_image_file(const std::filesystem::path& file);
// The same from an open stream (read from its start), `name` naming it in errors.
DecodedImage decode_image(std::FILE* file, const std::string& name);

// The PNG file's bytes of `image` (1 or 3 channels).
std::string encode_png(const DecodedImage& image);

}  // namespace distillery
