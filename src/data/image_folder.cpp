#include "data/image_folder.h"

#include <fmt/format.h>
#include <torch/types.h>

#include <algorithm>
#include <fstream>
#include <map>
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

LabeledImages read_image_folder(const std::filesystem::path& folder, int64_t channels) {
  DISTILLERY_CHECK(std::filesystem::is_directory(folder), Error("image folder not found").file(folder.string()));
  DISTILLERY_CHECK(channels == 1 || channels == 3, Error("image datasets have 1 or 3 channels").got(std::to_string(channels)));
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(folder))
    if (entry.is_regular_file() && is_image(entry.path())) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  DISTILLERY_CHECK(!files.empty(), Error("image folder holds no PNG or JPEG files").file(folder.string()));
  const auto labels = read_labels(folder);

  LabeledImages out;
  std::vector<int64_t> label_values;
  for (size_t i = 0; i < files.size(); ++i) {
    cv::Mat image = cv::imread(files[i].string(), channels == 1 ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR);
    DISTILLERY_CHECK(!image.empty(), Error("cannot decode image").file(files[i].string()).hint("the file is corrupt or not a PNG/JPEG"));
    if (channels == 3) cv::cvtColor(image, image, cv::COLOR_BGR2RGB);
    if (i == 0) out.images = torch::empty({static_cast<int64_t>(files.size()), channels, image.rows, image.cols}, torch::kUInt8);
    DISTILLERY_CHECK(image.rows == out.images.size(2) && image.cols == out.images.size(3),
                     Error("images in a dataset must all have one size").file(files[i].string())
                         .expected(fmt::format("{}×{} (as {})", out.images.size(3), out.images.size(2), files[0].string()))
                         .got(fmt::format("{}×{}", image.cols, image.rows)));
    const auto hwc = torch::from_blob(image.data, {image.rows, image.cols, channels}, torch::kUInt8);
    out.images[static_cast<int64_t>(i)].copy_(hwc.permute({2, 0, 1}));
    const auto relative = std::filesystem::relative(files[i], folder).generic_string();
    if (labels.empty()) {
      label_values.push_back(-1);
    } else {
      const auto it = labels.find(relative);
      DISTILLERY_CHECK(it != labels.end(), Error(fmt::format("dataset.json has no label for '{}'", relative)).file((folder / "dataset.json").string()));
      label_values.push_back(it->second);
    }
  }
  out.labels = torch::tensor(label_values, torch::kInt64);
  return out;
}

}  // namespace distillery
