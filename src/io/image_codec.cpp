#include "io/image_codec.h"

#include <fmt/format.h>
#include <jpeglib.h>
#include <png.h>

#include <array>
#include <csetjmp>
#include <cstdio>
#include <memory>

#include "core/error.h"

namespace distillery {

namespace {

// What a decoder said when it stopped, kept in plain storage: the libraries report through
// callbacks that jump back to a setjmp, and no C++ object may be created or destroyed between
// the setjmp and the jump.
struct LibraryMessage {
  char text[JMSG_LENGTH_MAX] = "";
};

// What a decode ended in. The refusals are found at the header, before pixels are allocated.
enum class Outcome { decoded, damaged, too_large, sixteen_bits, cmyk };

using File = std::unique_ptr<std::FILE, int (*)(std::FILE*)>;

void png_failed(png_structp png, png_const_charp message) {
  std::snprintf(static_cast<LibraryMessage*>(png_get_error_ptr(png))->text, JMSG_LENGTH_MAX, "%s", message);
  png_longjmp(png, 1);
}

void png_warned(png_structp /*png*/, png_const_charp /*message*/) {}

Outcome read_png(std::FILE* file, DecodedImage& image, std::vector<png_bytep>& rows, LibraryMessage& message) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &message, png_failed, png_warned);
  if (!png) return Outcome::damaged;
  png_infop info = png_create_info_struct(png);
  if (!info || setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
    return Outcome::damaged;
  }
  png_init_io(png, file);
  png_read_info(png, info);
  image.width = png_get_image_width(png, info);
  image.height = png_get_image_height(png, info);
  const int bit_depth = png_get_bit_depth(png, info), colour = png_get_color_type(png, info);
  const auto refuse = [&](Outcome outcome) {
    png_destroy_read_struct(&png, &info, nullptr);
    return outcome;
  };
  if (image.width * image.height > kMaxImagePixels) return refuse(Outcome::too_large);
  if (bit_depth == 16) return refuse(Outcome::sixteen_bits);
  if (colour == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (colour == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (colour & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  image.channels = png_get_channels(png, info);
  const auto row_bytes = static_cast<int64_t>(png_get_rowbytes(png, info));
  if (row_bytes != image.width * image.channels || (image.channels != 1 && image.channels != 3)) {
    std::snprintf(message.text, JMSG_LENGTH_MAX, "unexpected pixel layout after conversion (%d channels)", static_cast<int>(image.channels));
    return refuse(Outcome::damaged);
  }
  image.pixels.resize(static_cast<size_t>(image.height * row_bytes));
  rows.resize(static_cast<size_t>(image.height));
  for (int64_t y = 0; y < image.height; ++y) rows[static_cast<size_t>(y)] = image.pixels.data() + y * row_bytes;
  png_read_image(png, rows.data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return Outcome::decoded;
}

struct JpegErrors {
  jpeg_error_mgr manager;
  std::jmp_buf jump;
  LibraryMessage* message;
};

[[noreturn]] void jpeg_failed(j_common_ptr info) {
  auto* errors = reinterpret_cast<JpegErrors*>(info->err);
  (*info->err->format_message)(info, errors->message->text);
  std::longjmp(errors->jump, 1);
}

// libjpeg decodes what it can of damaged data and warns (level −1): a truncated file comes out
// grey at the bottom. Such a file is damaged, as PIL says it is.
void jpeg_message(j_common_ptr info, int level) {
  if (level < 0) jpeg_failed(info);
}

Outcome read_jpeg(std::FILE* file, DecodedImage& image, LibraryMessage& message) {
  jpeg_decompress_struct info;
  JpegErrors errors;
  info.err = jpeg_std_error(&errors.manager);
  errors.manager.error_exit = jpeg_failed;
  errors.manager.emit_message = jpeg_message;
  errors.message = &message;
  if (setjmp(errors.jump)) {
    jpeg_destroy_decompress(&info);
    return Outcome::damaged;
  }
  jpeg_create_decompress(&info);
  jpeg_stdio_src(&info, file);
  jpeg_read_header(&info, TRUE);
  image.width = info.image_width;
  image.height = info.image_height;
  const auto refuse = [&](Outcome outcome) {
    jpeg_destroy_decompress(&info);
    return outcome;
  };
  if (image.width * image.height > kMaxImagePixels) return refuse(Outcome::too_large);
  if (info.jpeg_color_space == JCS_CMYK || info.jpeg_color_space == JCS_YCCK) return refuse(Outcome::cmyk);
  // libjpeg's defaults (integer IDCT, fancy upsampling) are PIL's.
  info.out_color_space = info.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&info);
  image.channels = info.output_components;
  const auto row_bytes = image.width * image.channels;
  image.pixels.resize(static_cast<size_t>(image.height * row_bytes));
  while (info.output_scanline < info.output_height) {
    JSAMPROW row = image.pixels.data() + static_cast<int64_t>(info.output_scanline) * row_bytes;
    jpeg_read_scanlines(&info, &row, 1);
  }
  jpeg_finish_decompress(&info);
  jpeg_destroy_decompress(&info);
  return Outcome::decoded;
}

}  // namespace

DecodedImage decode_image_file(const std::filesystem::path& path) {
  File file(std::fopen(path.c_str(), "rb"), std::fclose);
  DISTILLERY_CHECK(file, Error("cannot open image").file(path.string()));
  return decode_image(file.get(), path.string());
}

DecodedImage decode_image(std::FILE* file, const std::string& name) {
  const std::filesystem::path path = name;
  std::array<unsigned char, 8> head{};
  const auto got = std::fread(head.data(), 1, head.size(), file);
  std::rewind(file);
  constexpr std::array<unsigned char, 8> kPng = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  const bool png = got == head.size() && head == kPng, jpeg = got >= 2 && head[0] == 0xff && head[1] == 0xd8;
  const auto not_decodable = [&] { return Error("cannot decode image").file(path.string()).hint("the file is corrupt or not a PNG/JPEG"); };
  DISTILLERY_CHECK(png || jpeg, not_decodable().got("neither a PNG nor a JPEG signature"));
  DecodedImage image;
  LibraryMessage message;
  std::vector<png_bytep> rows;
  switch (png ? read_png(file, image, rows, message) : read_jpeg(file, image, message)) {
    case Outcome::decoded: return image;
    case Outcome::damaged: throw not_decodable().got(message.text);
    case Outcome::too_large:
      throw Error("the image is too large").file(path.string()).expected(fmt::format("at most {} pixels (8192 × 8192)", kMaxImagePixels))
          .got(fmt::format("{} × {} in its header", image.width, image.height));
    case Outcome::sixteen_bits:
      throw Error("only 8-bit images are read").file(path.string()).got("16 bits per channel").hint("convert the images to 8 bits per channel");
    case Outcome::cmyk: throw Error("CMYK JPEGs are not read").file(path.string()).hint("convert the images to RGB");
  }
  throw not_decodable();
}

namespace {

void png_write_bytes(png_structp png, png_bytep data, png_size_t length) {
  static_cast<std::string*>(png_get_io_ptr(png))->append(reinterpret_cast<const char*>(data), length);
}

void png_flush_nothing(png_structp /*png*/) {}

bool write_png(const DecodedImage& image, std::string& bytes, std::vector<png_bytep>& rows, LibraryMessage& message) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &message, png_failed, png_warned);
  if (!png) return false;
  png_infop info = png_create_info_struct(png);
  if (!info || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, info ? &info : nullptr);
    return false;
  }
  png_set_write_fn(png, &bytes, png_write_bytes, png_flush_nothing);
  png_set_IHDR(png, info, static_cast<png_uint_32>(image.width), static_cast<png_uint_32>(image.height), 8,
               image.channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  png_write_image(png, rows.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return true;
}

}  // namespace

std::string encode_png(const DecodedImage& image) {
  DISTILLERY_CHECK((image.channels == 1 || image.channels == 3) && image.width > 0 && image.height > 0 &&
                       static_cast<int64_t>(image.pixels.size()) == image.width * image.height * image.channels,
                   Error("PNG encoding needs 1 or 3 channels of width × height pixels")
                       .got(fmt::format("{} × {} × {} and {} bytes", image.width, image.height, image.channels, image.pixels.size())));
  std::vector<png_bytep> rows(static_cast<size_t>(image.height));
  auto* pixels = const_cast<uint8_t*>(image.pixels.data());  // libpng's row type is not const; it only reads
  for (int64_t y = 0; y < image.height; ++y) rows[static_cast<size_t>(y)] = pixels + y * image.width * image.channels;
  std::string bytes;
  LibraryMessage message;
  DISTILLERY_CHECK(write_png(image, bytes, rows, message), Error("PNG encoding failed").got(message.text));
  return bytes;
}

}  // namespace distillery
