// defines: read_image_folder, read_class_folders
// A folder of PNG/JPEG images (searched recursively, in sorted path order) as a dataset, with
// class labels from an EDM-style dataset.json when present:
//   {"labels": [["00000/img00000000.png", 6], ...]}   (paths relative to the folder)
#pragma once

#include <filesystem>

#include "data/fashion_mnist.h"

namespace distillery {

// uint8 [N, C, H, W] as the files hold them: C = 1 when every image is grey, else 3 in RGB
// order with grey images repeated into the three channels and alpha dropped (what PIL's
// convert("RGB") gives pytorch-fid); labels −1 when the folder has no dataset.json. Every
// image must have the size of the first and 8 bits per channel.
LabeledImages read_image_folder(const std::filesystem::path& folder);

// An ImageNet-style folder: one subfolder per class (FOLDER/n01440764/*.JPEG), labelled by the
// subfolders' places in sorted name order; images as read_image_folder reads them.
LabeledImages read_class_folders(const std::filesystem::path& folder);

}  // namespace distillery
