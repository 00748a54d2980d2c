// defines: read_cifar10_batch, load_cifar10
// CIFAR-10's python version (cifar-10-python.tar.gz, extracted as cifar-10-batches-py/): five
// training batches data_batch_1..5 and test_batch, each a pickled dict whose 'data' is a uint8
// array [10000, 3072] (per row the 1024 red, then green, then blue values of a 32×32 image,
// row-major) and whose 'labels' is a list of classes 0-9. Read by the data-only unpickler
// (io/pickle.h): nothing in the files is run.
#pragma once

#include <filesystem>
#include <string>

#include "data/fashion_mnist.h"

namespace distillery {

// One batch as uint8 [N, 3, 32, 32] with int64 labels; errors name the file.
LabeledImages read_cifar10_batch(const std::filesystem::path& file);

// `split` "train" (the five data batches, 50,000 images) or "test" (10,000), from the extracted
// cifar-10-batches-py directory.
LabeledImages load_cifar10(const std::filesystem::path& dir, const std::string& split);

}  // namespace distillery
