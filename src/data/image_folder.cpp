#include "data/image_folder.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <torch/types.h>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "core/error.h"

namespace distillery {

namespace {
bool is_image(const std::filesystem::path& p) {
  auto ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

// Width × height as a PNG's or JPEG's header declares it, read before decoding: a file of a
// few hundred bytes can declare 60000 × 60000 pixels, which the decoder would allocate. nullopt
// for a header that is neither (the decoder then reports the file).
std::optional<std::pair<int64_t, int64_t>> declared_size(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::vector<unsigned char> head(1 << 16);
  in.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<size_t>(in.gcount()));
  const auto be = [&](size_t at, int bytes) {
    int64_t value = 0;
    for (int i = 0; i < bytes; ++i) value = value << 8 | head[at + static_cast<size_t>(i)];
    return value;
  };
  constexpr unsigned char kPng[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (head.size() >= 24 && std::equal(std::begin(kPng), std::end(kPng), head.begin())) return std::pair{be(16, 4), be(20, 4)};
  if (head.size() < 4 || head[0] != 0xff || head[1] != 0xd8) return std::nullopt;
  // JPEG: walk the marker segments to the first start-of-frame (SOF0..SOF15 but DHT, JPG, DAC).
  for (size_t at = 2; at + 9 <= head.size();) {
    if (head[at] != 0xff) return std::nullopt;
    const unsigned char marker = head[at + 1];
    if (marker == 0xff) { ++at; continue; }  // fill byte
    if (marker >= 0xc0 && marker <= 0xcf && marker != 0xc4 && marker != 0xc8 && marker != 0xcc) return std::pair{be(at + 7, 2), be(at + 5, 2)};
    at += 2 + static_cast<size_t>(be(at + 2, 2));
  }
  return std::nullopt;
}

// libpng reports a damaged file on stderr ("libpng error: Read Error") before OpenCV returns an
// empty image, which is then reported as ours with the file named: the library's line would be
// a second, rawer copy. Muted for the decode call only.
class StderrMuted {
 public:
  StderrMuted() : saved_(::dup(STDERR_FILENO)) {
    std::fflush(stderr);
    const int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (saved_ >= 0 && null >= 0) ::dup2(null, STDERR_FILENO);
    if (null >= 0) ::close(null);
  }
  ~StderrMuted() {
    std::fflush(stderr);
    if (saved_ >= 0) {
      ::dup2(saved_, STDERR_FILENO);
      ::close(saved_);
    }
  }
  StderrMuted(const StderrMuted&) = delete;
  StderrMuted& operator=(const StderrMuted&) = delete;

 private:
  int saved_;
};

// One image as PIL's Image.open gives it to pytorch-fid and EDM's dataset tool (no EXIF
// rotation), then as convert("RGB") would see it: 8-bit grey as one channel, colour (palette
// images expanded) as three in RGB order, alpha dropped.
cv::Mat decode_as_stored(const std::filesystem::path& file) {
  // 8192 × 8192: beyond any dataset a diffusion model is trained on, and 200 MB as RGB.
  constexpr int64_t kMaxPixels = int64_t{1} << 26;
  if (const auto size = declared_size(file))
    DISTILLERY_CHECK(size->first * size->second <= kMaxPixels, Error("the image is too large").file(file.string())
                                                                  .expected(fmt::format("at most {} pixels (8192 × 8192)", kMaxPixels))
                                                                  .got(fmt::format("{} × {} in its header", size->first, size->second)));
  cv::Mat image;
  {
    const StderrMuted muted;
    image = cv::imread(file.string(), cv::IMREAD_UNCHANGED);
  }
  DISTILLERY_CHECK(!image.empty(), Error("cannot decode image").file(file.string()).hint("the file is corrupt or not a PNG/JPEG"));
  DISTILLERY_CHECK(image.depth() == CV_8U, Error("only 8-bit images are read").file(file.string()).got(fmt::format("{} bits per channel", image.elemSize1() * 8))
                                               .hint("convert the images to 8 bits per channel"));
  switch (image.channels()) {
    case 1: break;
    case 2: cv::extractChannel(image, image, 0); break;  // grey + alpha
    case 3: cv::cvtColor(image, image, cv::COLOR_BGR2RGB); break;
    case 4: cv::cvtColor(image, image, cv::COLOR_BGRA2RGB); break;
    default: throw Error("unsupported number of channels").file(file.string()).got(std::to_string(image.channels())).expected("1 to 4");
  }
  return image;
}

std::map<std::string, int64_t> read_labels(const std::filesystem::path& folder) {
  const auto path = folder / "dataset.json";
  std::map<std::string, int64_t> labels;
  if (!std::filesystem::exists(path)) return labels;
  std::ifstream in(path);
  const auto json = nlohmann::json::parse(in, nullptr, false);
  auto bad = [&](const std::string& what) {
    return Error(fmt::format("dataset.json: {}", what)).file(path.string()).expected(R"({"labels": [["relative/path.png", class], ...]})");
  };
  if (!json.is_object() || !json.contains("labels") || !json["labels"].is_array()) throw bad("no \"labels\" list");
  for (const auto& entry : json["labels"]) {
    if (!entry.is_array() || entry.size() != 2 || !entry[0].is_string() || !entry[1].is_number_integer() || entry[1].get<int64_t>() < 0)
      throw bad(fmt::format("entry {} is not [path, non-negative class]", entry.dump()));
    labels[entry[0].get<std::string>()] = entry[1].get<int64_t>();
  }
  return labels;
}
}  // namespace

namespace {

std::vector<std::filesystem::path> image_files(const std::filesystem::path& folder) {
  DISTILLERY_CHECK(std::filesystem::is_directory(folder), Error("image folder not found").file(folder.string()));
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(folder))
    if (entry.is_regular_file() && is_image(entry.path())) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  DISTILLERY_CHECK(!files.empty(), Error("image folder holds no PNG or JPEG files").file(folder.string()));
  return files;
}

// The files decoded into one tensor, labelled by `label_of(path relative to the folder)`.
LabeledImages read_images(const std::filesystem::path& folder, const std::vector<std::filesystem::path>& files,
                          const std::function<int64_t(const std::string&)>& label_of) {
  LabeledImages out;
  std::vector<int64_t> label_values;
  for (size_t i = 0; i < files.size(); ++i) {
    const auto image = decode_as_stored(files[i]);
    const int64_t channels = image.channels();
    if (i == 0) out.images = torch::empty({static_cast<int64_t>(files.size()), channels, image.rows, image.cols}, torch::kUInt8);
    DISTILLERY_CHECK(image.rows == out.images.size(2) && image.cols == out.images.size(3),
                     Error("images in a dataset must all have one size").file(files[i].string())
                         .expected(fmt::format("{}×{} (as {})", out.images.size(3), out.images.size(2), files[0].string()))
                         .got(fmt::format("{}×{}", image.cols, image.rows)));
    // The first colour image makes the folder colour: the grey ones before it become RGB.
    if (channels == 3 && out.images.size(1) == 1) out.images = out.images.expand({-1, 3, -1, -1}).contiguous();
    const auto hwc = torch::from_blob(image.data, {image.rows, image.cols, channels}, torch::kUInt8);
    out.images[static_cast<int64_t>(i)].copy_(hwc.permute({2, 0, 1}));  // a grey image in a colour folder is broadcast
    label_values.push_back(label_of(std::filesystem::relative(files[i], folder).generic_string()));
  }
  out.labels = torch::tensor(label_values, torch::kInt64);
  return out;
}

}  // namespace

LabeledImages read_image_folder(const std::filesystem::path& folder) {
  const auto files = image_files(folder);
  const auto labels = read_labels(folder);
  return read_images(folder, files, [&](const std::string& relative) -> int64_t {
    if (labels.empty()) return -1;
    const auto it = labels.find(relative);
    DISTILLERY_CHECK(it != labels.end(), Error(fmt::format("dataset.json has no label for '{}'", relative)).file((folder / "dataset.json").string()));
    return it->second;
  });
}

LabeledImages read_class_folders(const std::filesystem::path& folder) {
  const auto files = image_files(folder);
  std::vector<std::string> classes;
  for (const auto& entry : std::filesystem::directory_iterator(folder))
    if (entry.is_directory()) classes.push_back(entry.path().filename().string());
  std::sort(classes.begin(), classes.end());
  return read_images(folder, files, [&](const std::string& relative) -> int64_t {
    const auto slash = relative.find('/');
    DISTILLERY_CHECK(slash != std::string::npos, Error(fmt::format("'{}' is not inside a class subfolder", relative)).file(folder.string())
                                                     .expected("every image under FOLDER/CLASS/, the classes numbered in sorted name order"));
    return std::lower_bound(classes.begin(), classes.end(), relative.substr(0, slash)) - classes.begin();
  });
}

}  // namespace distillery
