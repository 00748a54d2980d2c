// The datasets of published teachers: CIFAR-10's python batches (through the data-only
// unpickler, against torchvision's reading of the same files) and ImageNet-style class folders,
// through data.* configs and evaluation sources.
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <fstream>
#include <functional>
#include <limits>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/error.h"
#include "data/cifar10.h"
#include "data/image_folder.h"
#include "data/training_data.h"
#include "eval/image_source.h"
#include "io/image.h"
#include "io/pickle.h"
#include "io/tensor_file.h"
#include "test_support.h"

namespace distillery {
namespace {

using testing::shell_quoted;

std::string error_of(const std::function<void()>& run) {
  try {
    run();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// A fixture directory (cifar-10-batches-py/ and expected.safetensors), made once per process.
const std::filesystem::path& cifar_fixture() {
  static const auto dir = [] {
    // Its own directory, which no test's scratch_dir() empties.
    const auto d = std::filesystem::temp_directory_path() / "distillery-tests" / ("cifar10-fixture-" + std::to_string(::getpid()));
    std::filesystem::remove_all(d);
    const auto made = testing::run_command(testing::kPython + " " + shell_quoted(testing::kSourceDir / "tests/python/cifar10_fixture.py") + " " +
                                           shell_quoted(d));
    EXPECT_EQ(made.exit_code, 0) << made.output;
    return d;
  }();
  return dir;
}

TEST(Cifar10, BatchesPickledThePublishedWayAndAtEveryProtocolReadAsTorchvisionReadsThem) {
  if (!testing::python_available()) GTEST_SKIP() << "no project Python (run tools/bootstrap.sh)";
  const auto expected = load_tensor_file(cifar_fixture() / "expected.safetensors").tensors;
  for (const std::string split : {"train", "test"}) {
    const auto data = load_cifar10(cifar_fixture() / "cifar-10-batches-py", split);
    EXPECT_TRUE(torch::equal(data.images, expected.at(split + "_images"))) << split;
    EXPECT_TRUE(torch::equal(data.labels, expected.at(split + "_labels"))) << split;
  }
}

TEST(Cifar10, TrainingDataAndEvaluationSourcesHonourTheSplit) {
  if (!testing::python_available()) GTEST_SKIP() << "no project Python (run tools/bootstrap.sh)";
  ConfigSchema schema;
  add_training_data_fields(schema);
  schema.add({"train.seed", ConfigType::Int, "", "0"});
  const auto dir = (cifar_fixture() / "cifar-10-batches-py").string();
  const auto train = load_training_data(Config::parse(schema, "data: {dataset: cifar10, path: '" + dir + "'}", "test.yaml"), {3, 32, 32});
  EXPECT_EQ(train.x0.sizes().vec(), (std::vector<int64_t>{35, 3, 32, 32}));
  EXPECT_GE(train.x0.min().item<float>(), -1.0f);
  EXPECT_LE(train.x0.max().item<float>(), 1.0f);
  const auto test = load_training_data(Config::parse(schema, "data: {dataset: cifar10, path: '" + dir + "', split: test}", "test.yaml"), {3, 32, 32});
  EXPECT_EQ(test.labels.size(0), 7);
  EXPECT_NE(error_of([&] { load_training_data(Config::parse(schema, "data: {dataset: cifar10, path: '" + dir + "'}", "test.yaml"), {1, 32, 32}); })
                .find("the images have 3 channels, the model takes 1"),
            std::string::npos);
  EXPECT_NE(error_of([&] { load_training_data(Config::parse(schema, "data: {dataset: class_folders, path: '" + dir + "', split: test}", "t.yaml"), {3, 32, 32}); })
                .find("data.dataset class_folders has no splits"),
            std::string::npos);

  const auto source = open_image_source("dataset:cifar10-test:" + dir, {}, torch::kCPU);
  const auto expected = load_tensor_file(cifar_fixture() / "expected.safetensors").tensors;
  ImageBatch batch;
  ASSERT_TRUE(source->next(100, batch));
  EXPECT_TRUE(torch::equal(batch.images, expected.at("test_images")));
  EXPECT_TRUE(torch::equal(batch.labels, expected.at("test_labels")));
}

TEST(Cifar10, DamagedBatchesAreNamedAndNothingInThemRuns) {
  const auto dir = testing::scratch_dir();
  const auto write = [&](const std::string& name, const std::string& bytes) {
    std::ofstream(dir / name, std::ios::binary) << bytes;
    return dir / name;
  };
  // What pickle.dumps(os.system) → loads would call: refused by name, never run.
  const auto code = write("code", std::string("cos\nsystem\n(S'touch ") + (dir / "ran").string() + "'\ntR.");
  const auto refused = error_of([&] { read_cifar10_batch(code); });
  EXPECT_NE(refused.find("'os.system', which a data reader does not call"), std::string::npos) << refused;
  EXPECT_FALSE(std::filesystem::exists(dir / "ran"));
  // A list that holds itself, and tuples that double forty times over shared entries.
  const auto op = [](std::initializer_list<int> codes) {
    std::string out;
    for (const int c : codes) out += static_cast<char>(c);
    return out;
  };
  const auto cycle = op({0x80, 2, ']', 'q', 0, 'h', 0, 'a', '.'});
  EXPECT_NE(error_of([&] { read_cifar10_batch(write("cycle", cycle)); }).find("nested more than 256 deep"), std::string::npos);
  auto doubling = op({0x80, 2, ']', 'q', 0, '0'});
  for (int i = 1; i <= 40; ++i) doubling += op({'h', i - 1, 'h', i - 1, 0x86, 'q', i, '0'});
  const auto bomb = error_of([&] { read_cifar10_batch(write("bomb", doubling + op({'h', 40, '.'}))); });
  EXPECT_NE(bomb.find("expand to far more than the file's size"), std::string::npos) << bomb;
  const auto truncated = op({0x80, 2, '}', 'q', 0, '(', 'U', 4, 'd', 'a'});
  EXPECT_NE(error_of([&] { read_cifar10_batch(write("truncated", truncated)); }).find("a string runs past the end of the file"), std::string::npos);
  EXPECT_NE(error_of([&] { read_cifar10_batch(write("cut", op({0x80, 2, ']', 'J', 1}))); }).find("the file ends inside an opcode"), std::string::npos);
  const auto not_batch = error_of([&] { read_cifar10_batch(write("dict", op({0x80, 2, '}', 'q', 0, '.'}))); });
  EXPECT_NE(not_batch.find("not a CIFAR-10 batch: no 'data' or no 'labels'"), std::string::npos) << not_batch;
  EXPECT_NE(not_batch.find("dict"), std::string::npos);
  EXPECT_NE(error_of([&] { load_cifar10(dir / "absent", "train"); }).find("CIFAR-10 directory not found"), std::string::npos);
}

TEST(ClassFolders, SubfoldersAreClassesInSortedOrderThroughConfigsAndSources) {
  const auto dir = testing::scratch_dir() / "imagenet";
  const std::vector<std::pair<std::string, float>> files = {{"n02/b.png", 0.5f}, {"n01/a.png", -0.5f}, {"n01/c.png", 0.0f}, {"n10/d.png", 1.0f}};
  for (const auto& [name, value] : files) {
    std::filesystem::create_directories((dir / name).parent_path());
    write_image_grid(dir / name, torch::full({1, 3, 5, 6}, value), 1);
  }
  const auto data = read_class_folders(dir);
  // Sorted paths: n01/a, n01/c, n02/b, n10/d; classes n01 → 0, n02 → 1, n10 → 2.
  EXPECT_TRUE(torch::equal(data.labels, torch::tensor({0, 0, 1, 2}, torch::kInt64)));
  EXPECT_EQ(data.images.sizes().vec(), (std::vector<int64_t>{4, 3, 5, 6}));
  EXPECT_EQ(data.images[2][0][0][0].item<int>(), quantize_to_uint8(torch::full({1}, 0.5f))[0].item<int>());
  const auto source = open_image_source("classes:" + dir.string(), {}, torch::kCPU);
  ImageBatch batch;
  ASSERT_TRUE(source->next(10, batch));
  EXPECT_TRUE(torch::equal(batch.labels, data.labels));

  write_image_grid(dir / "loose.png", torch::zeros({1, 3, 5, 6}), 1);
  const auto loose = error_of([&] { read_class_folders(dir); });
  EXPECT_NE(loose.find("'loose.png' is not inside a class subfolder"), std::string::npos) << loose;
}

// Latents encoded elsewhere (or what `distillery sample` wrote) are taken as they are, and a
// file of the wrong shape, dtype or labels is refused by name.
TEST(SamplesFile, LatentsAreTakenAsTheyAreAndMismatchesAreNamed) {
  ConfigSchema schema;
  add_training_data_fields(schema);
  schema.add({"train.seed", ConfigType::Int, "", "0"});
  const auto dir = testing::scratch_dir();
  const auto path = (dir / "latents.safetensors").string();
  const auto config = Config::parse(schema, "data: {dataset: samples, path: '" + path + "'}", "test.yaml");
  torch::manual_seed(2);
  const auto latents = 3 * torch::randn({5, 4, 8, 8});
  const auto labels = torch::tensor({0, 3, 999, 1, 2}, torch::kInt64);
  save_tensor_file(path, {{"samples", latents}, {"labels", labels}});
  const auto data = load_training_data(config, {4, 8, 8});
  EXPECT_TRUE(torch::equal(data.x0, latents));
  EXPECT_TRUE(torch::equal(data.labels, labels));
  EXPECT_NE(error_of([&] { load_training_data(config, {4, 16, 16}); }).find("'samples' in " + path), std::string::npos);
  save_tensor_file(path, {{"samples", latents.to(torch::kFloat64)}});
  const auto unlabelled = load_training_data(config, {4, 8, 8});
  EXPECT_EQ(unlabelled.x0.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::equal(unlabelled.labels, torch::full({5}, -1, torch::kInt64)));
  save_tensor_file(path, {{"samples", latents}, {"labels", labels.to(torch::kInt32)}});
  EXPECT_NE(error_of([&] { load_training_data(config, {4, 8, 8}); }).find("'labels' in " + path), std::string::npos);
  save_tensor_file(path, {{"samples", latents}, {"labels", labels.narrow(0, 0, 4)}});
  EXPECT_NE(error_of([&] { load_training_data(config, {4, 8, 8}); }).find("one per sample"), std::string::npos);
  save_tensor_file(path, {{"latents", latents}});
  EXPECT_NE(error_of([&] { load_training_data(config, {4, 8, 8}); }).find("samples"), std::string::npos);
  auto broken = latents.clone();
  broken[2][1][3][3] = std::numeric_limits<float>::quiet_NaN();
  save_tensor_file(path, {{"samples", broken}});
  EXPECT_NE(error_of([&] { load_training_data(config, {4, 8, 8}); }).find("non-finite"), std::string::npos);
}

TEST(Pickle, ReadsPlainValuesAndRefusesObjects) {
  // pickle.dumps({'a': [1, -2, 3.5, True, None], 'b': (b'xy',)}, protocol=3)
  const std::string bytes(
      "\x80\x03\x7d\x71\x00\x28\x58\x01\x00\x00\x00\x61\x71\x01\x5d\x71\x02\x28\x4b\x01\x4a\xfe\xff\xff\xff\x47\x40\x0c\x00\x00\x00"
      "\x00\x00\x00\x88\x4e\x65\x58\x01\x00\x00\x00\x62\x71\x03\x43\x02\x78\x79\x71\x04\x85\x71\x05\x75\x2e",
      56);
  const auto value = parse_pickle(bytes, "test");
  const auto& a = std::get<PickleList>(value.find("a")->value);
  ASSERT_EQ(a.size(), 5u);
  EXPECT_EQ(std::get<int64_t>(a[0]->value), 1);
  EXPECT_EQ(std::get<int64_t>(a[1]->value), -2);
  EXPECT_EQ(std::get<double>(a[2]->value), 3.5);
  EXPECT_TRUE(std::get<bool>(a[3]->value));
  EXPECT_TRUE(std::holds_alternative<PickleValue::None>(a[4]->value));
  EXPECT_EQ(std::get<std::string>(std::get<PickleValue::Tuple>(value.find("b")->value).items[0]->value), "xy");
  // An object (NEWOBJ) is not data.
  EXPECT_NE(error_of([] { parse_pickle(std::string("\x80\x02\x63__main__\nC\n)\x81.", 18), "obj"); }).find("'__main__.C'"), std::string::npos);
}

// The CPU smoke versions of the CIFAR-10 and ImageNet-64 recipes, through the CLI as a user runs
// them: a teacher of EDM's network family trained on the dataset, then a DMD2 student (GAN head
// on the real images) distilled from it, then generated from.
TEST(PublishedTeacherRecipes, CifarImagenetAndDitSmokeRunsTrainATeacherDistilItAndGenerate) {
  if (!testing::python_available()) GTEST_SKIP() << "no project Python (run tools/bootstrap.sh)";
  const auto cifar = (cifar_fixture() / "cifar-10-batches-py").string();
  const auto dir = testing::scratch_dir();
  torch::manual_seed(5);
  for (const std::string class_name : {"n01443537", "n01530575", "n02085620"})
    for (int i = 0; i < 2; ++i) {
      std::filesystem::create_directories(dir / "imagenet" / class_name);
      write_image_grid(dir / "imagenet" / class_name / (std::to_string(i) + ".png"), torch::rand({1, 3, 64, 64}) * 2 - 1, 1);
    }
  // Latents as DiT's teacher sees them: 4 channels, unit scale, ImageNet labels.
  save_tensor_file(dir / "latents.safetensors", {{"samples", torch::randn({6, 4, 8, 8})}, {"labels", torch::randint(0, 1000, {6}, torch::kInt64)}});
  const struct {
    std::string name, data, kind;
    int64_t channels, resolution;
  } runs[] = {{"cifar10_ddpmpp", cifar, "song_unet", 3, 32},
              {"imagenet64_adm", (dir / "imagenet").string(), "dhariwal_unet", 3, 64},
              {"dit_latent", (dir / "latents.safetensors").string(), "dit", 4, 8}};
  for (const auto& run : runs) {
    const auto recipe = [&](const std::string& kind, const std::string& name) { return shell_quoted(testing::kSourceDir / "configs" / kind / (name + ".yaml")); };
    const auto data = " --set " + shell_quoted("data.path=" + run.data);
    const auto teacher = testing::run_command(testing::kCli + " teacher train --config " + recipe("teacher", run.name + "_smoke") + data + " --out " +
                                              shell_quoted(dir / (run.name + "-teacher")));
    ASSERT_EQ(teacher.exit_code, 0) << teacher.output;
    const auto teacher_file = dir / (run.name + "-teacher") / "teacher.safetensors";
    EXPECT_NE(load_tensor_file(teacher_file).metadata.at("config").find("\"kind\":\"" + run.kind + "\""), std::string::npos);
    const auto student_dir = dir / (run.name + "-student");
    const auto distilled = testing::run_command(testing::kCli + " distill --config " + recipe("distill", "dmd2_" + run.name.substr(0, run.name.find('_')) + "_smoke") +
                                                " --teacher " + shell_quoted(teacher_file) + data + " --out " + shell_quoted(student_dir));
    ASSERT_EQ(distilled.exit_code, 0) << distilled.output;
    std::ifstream stats(student_dir / "stats.jsonl");
    int lines = 0;
    for (std::string line; std::getline(stats, line); ++lines) {
      const auto entry = nlohmann::json::parse(line);
      for (const char* key : {"dm_loss", "critic_loss", "gan_generator_loss", "gan_critic_loss"}) {
        if (entry.contains(key)) EXPECT_TRUE(std::isfinite(entry[key].get<double>())) << run.name << " " << key << ": " << line;
      }
    }
    EXPECT_EQ(lines, 2) << run.name;
    const auto generated = testing::run_command(testing::kCli + " generate --model " + shell_quoted(student_dir) + " --num 3 --out " +
                                                shell_quoted(dir / (run.name + ".safetensors")));
    ASSERT_EQ(generated.exit_code, 0) << generated.output;
    const auto samples = load_tensor_file(dir / (run.name + ".safetensors")).tensors.at("samples");
    EXPECT_EQ(samples.sizes().vec(), (std::vector<int64_t>{3, run.channels, run.resolution, run.resolution}));
    EXPECT_TRUE(torch::isfinite(samples).all().item<bool>());
  }
  // Latents are not images: a PNG is refused before anything is drawn.
  const auto png = testing::run_command(testing::kCli + " generate --model " + shell_quoted(dir / "dit_latent-student") + " --num 3 --out " +
                                        shell_quoted(dir / "latents.png"));
  EXPECT_NE(png.exit_code, 0);
  EXPECT_NE(png.output.find("not images a PNG can show"), std::string::npos) << png.output;
}

}  // namespace
}  // namespace distillery
