#include "data/image_folder.h"

#include <fmt/format.h>
#include <torch/types.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/image_codec.h"

namespace distillery {

namespace {
bool is_image(const std::filesystem::path& p) {
  auto ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
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
    // A second label for one image would otherwise silently replace the first.
    if (!labels.emplace(entry[0].get<std::string>(), entry[1].get<int64_t>()).second)
      throw bad(fmt::format("'{}' is labelled more than once", entry[0].get<std::string>()));
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
    auto image = decode_image_file(files[i]);
    const int64_t channels = image.channels;
    if (i == 0) out.images = torch::empty({static_cast<int64_t>(files.size()), channels, image.height, image.width}, torch::kUInt8);
    DISTILLERY_CHECK(image.height == out.images.size(2) && image.width == out.images.size(3),
                     Error("images in a dataset must all have one size").file(files[i].string())
                         .expected(fmt::format("{}×{} (as {})", out.images.size(3), out.images.size(2), files[0].string()))
                         .got(fmt::format("{}×{}", image.width, image.height)));
    // The first colour image makes the folder colour: the grey ones before it become RGB.
    if (channels == 3 && out.images.size(1) == 1) out.images = out.images.expand({-1, 3, -1, -1}).contiguous();
    const auto hwc = torch::from_blob(image.pixels.data(), {image.height, image.width, channels}, torch::kUInt8);
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
  std::set<std::string> present;
  for (const auto& file : files) present.insert(std::filesystem::relative(file, folder).generic_string());
  for (const auto& [relative, label] : labels)
    DISTILLERY_CHECK(present.count(relative), Error(fmt::format("dataset.json labels '{}', which is not an image in the folder", relative))
                                                  .file((folder / "dataset.json").string()).expected("one entry per PNG or JPEG file, by its path in the folder"));
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
