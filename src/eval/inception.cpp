#include "eval/inception.h"

#include <torch/nn/functional.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/types.h>

#include "core/error.h"
#include "io/tensor_file.h"
#include "models/weights.h"

namespace distillery {

namespace F = torch::nn::functional;

namespace {

// conv (no bias) → batch norm (ε = 1e-3) → ReLU, in place on the batch norm's output: the
// network only runs in inference, and a fresh tensor per ReLU costs an allocation and its page
// faults for nothing.
struct BasicConvImpl : torch::nn::Module {
  BasicConvImpl(int64_t in, int64_t out, std::vector<int64_t> kernel, std::vector<int64_t> padding = {0, 0}, int64_t stride = 1) {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).padding(padding).stride(stride).bias(false)));
    bn = register_module("bn", torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(out).eps(1e-3)));
  }
  at::Tensor forward(const at::Tensor& x) { return bn->forward(conv->forward(x)).relu_(); }
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
};
TORCH_MODULE(BasicConv);

// Every Inception block: named branches of BasicConvs; forward is block-specific.
struct MixedBlock : torch::nn::Module {
  BasicConv add(const std::string& name, int64_t in, int64_t out, std::vector<int64_t> kernel, std::vector<int64_t> padding = {0, 0}, int64_t stride = 1) {
    return register_module(name, BasicConv(in, out, std::move(kernel), std::move(padding), stride));
  }
  virtual at::Tensor forward(const at::Tensor& x) = 0;
};

// TensorFlow's average pool: padded zeros are not counted.
at::Tensor average_pool_without_padding(const at::Tensor& x) {
  return F::avg_pool2d(x, F::AvgPool2dFuncOptions(3).stride(1).padding(1).count_include_pad(false));
}

struct FidInceptionA : MixedBlock {
  FidInceptionA(int64_t in, int64_t pool_features) {
    b1 = add("branch1x1", in, 64, {1, 1});
    b5_1 = add("branch5x5_1", in, 48, {1, 1});
    b5_2 = add("branch5x5_2", 48, 64, {5, 5}, {2, 2});
    d1 = add("branch3x3dbl_1", in, 64, {1, 1});
    d2 = add("branch3x3dbl_2", 64, 96, {3, 3}, {1, 1});
    d3 = add("branch3x3dbl_3", 96, 96, {3, 3}, {1, 1});
    pool = add("branch_pool", in, pool_features, {1, 1});
  }
  at::Tensor forward(const at::Tensor& x) override {
    return torch::cat({b1->forward(x), b5_2->forward(b5_1->forward(x)), d3->forward(d2->forward(d1->forward(x))),
                       pool->forward(average_pool_without_padding(x))}, 1);
  }
  BasicConv b1{nullptr}, b5_1{nullptr}, b5_2{nullptr}, d1{nullptr}, d2{nullptr}, d3{nullptr}, pool{nullptr};
};

struct InceptionB : MixedBlock {
  explicit InceptionB(int64_t in) {
    b3 = add("branch3x3", in, 384, {3, 3}, {0, 0}, 2);
    d1 = add("branch3x3dbl_1", in, 64, {1, 1});
    d2 = add("branch3x3dbl_2", 64, 96, {3, 3}, {1, 1});
    d3 = add("branch3x3dbl_3", 96, 96, {3, 3}, {0, 0}, 2);
  }
  at::Tensor forward(const at::Tensor& x) override {
    return torch::cat({b3->forward(x), d3->forward(d2->forward(d1->forward(x))), F::max_pool2d(x, F::MaxPool2dFuncOptions(3).stride(2))}, 1);
  }
  BasicConv b3{nullptr}, d1{nullptr}, d2{nullptr}, d3{nullptr};
};

struct FidInceptionC : MixedBlock {
  FidInceptionC(int64_t in, int64_t c7) {
    b1 = add("branch1x1", in, 192, {1, 1});
    s1 = add("branch7x7_1", in, c7, {1, 1});
    s2 = add("branch7x7_2", c7, c7, {1, 7}, {0, 3});
    s3 = add("branch7x7_3", c7, 192, {7, 1}, {3, 0});
    d1 = add("branch7x7dbl_1", in, c7, {1, 1});
    d2 = add("branch7x7dbl_2", c7, c7, {7, 1}, {3, 0});
    d3 = add("branch7x7dbl_3", c7, c7, {1, 7}, {0, 3});
    d4 = add("branch7x7dbl_4", c7, c7, {7, 1}, {3, 0});
    d5 = add("branch7x7dbl_5", c7, 192, {1, 7}, {0, 3});
    pool = add("branch_pool", in, 192, {1, 1});
  }
  at::Tensor forward(const at::Tensor& x) override {
    return torch::cat({b1->forward(x), s3->forward(s2->forward(s1->forward(x))),
                       d5->forward(d4->forward(d3->forward(d2->forward(d1->forward(x))))), pool->forward(average_pool_without_padding(x))}, 1);
  }
  BasicConv b1{nullptr}, s1{nullptr}, s2{nullptr}, s3{nullptr}, d1{nullptr}, d2{nullptr}, d3{nullptr}, d4{nullptr}, d5{nullptr}, pool{nullptr};
};

struct InceptionD : MixedBlock {
  explicit InceptionD(int64_t in) {
    t1 = add("branch3x3_1", in, 192, {1, 1});
    t2 = add("branch3x3_2", 192, 320, {3, 3}, {0, 0}, 2);
    s1 = add("branch7x7x3_1", in, 192, {1, 1});
    s2 = add("branch7x7x3_2", 192, 192, {1, 7}, {0, 3});
    s3 = add("branch7x7x3_3", 192, 192, {7, 1}, {3, 0});
    s4 = add("branch7x7x3_4", 192, 192, {3, 3}, {0, 0}, 2);
  }
  at::Tensor forward(const at::Tensor& x) override {
    return torch::cat({t2->forward(t1->forward(x)), s4->forward(s3->forward(s2->forward(s1->forward(x)))),
                       F::max_pool2d(x, F::MaxPool2dFuncOptions(3).stride(2))}, 1);
  }
  BasicConv t1{nullptr}, t2{nullptr}, s1{nullptr}, s2{nullptr}, s3{nullptr}, s4{nullptr};
};

// FIDInceptionE_1 pools by average without padding, FIDInceptionE_2 by maximum.
struct FidInceptionE : MixedBlock {
  FidInceptionE(int64_t in, bool max_pool) : max_pool(max_pool) {
    b1 = add("branch1x1", in, 320, {1, 1});
    t1 = add("branch3x3_1", in, 384, {1, 1});
    t2a = add("branch3x3_2a", 384, 384, {1, 3}, {0, 1});
    t2b = add("branch3x3_2b", 384, 384, {3, 1}, {1, 0});
    d1 = add("branch3x3dbl_1", in, 448, {1, 1});
    d2 = add("branch3x3dbl_2", 448, 384, {3, 3}, {1, 1});
    d3a = add("branch3x3dbl_3a", 384, 384, {1, 3}, {0, 1});
    d3b = add("branch3x3dbl_3b", 384, 384, {3, 1}, {1, 0});
    pool = add("branch_pool", in, 192, {1, 1});
  }
  at::Tensor forward(const at::Tensor& x) override {
    const auto t = t1->forward(x);
    const auto d = d2->forward(d1->forward(x));
    const auto pooled = max_pool ? F::max_pool2d(x, F::MaxPool2dFuncOptions(3).stride(1).padding(1)) : average_pool_without_padding(x);
    return torch::cat({b1->forward(x), t2a->forward(t), t2b->forward(t), d3a->forward(d), d3b->forward(d), pool->forward(pooled)}, 1);
  }
  bool max_pool;
  BasicConv b1{nullptr}, t1{nullptr}, t2a{nullptr}, t2b{nullptr}, d1{nullptr}, d2{nullptr}, d3a{nullptr}, d3b{nullptr}, pool{nullptr};
};

// Stands in a block's list where pytorch-fid has a parameter-free pooling layer, so the
// indices of the layers after it match.
struct Pool : torch::nn::Module {
  explicit Pool(bool adaptive_average) : adaptive_average(adaptive_average) {}
  at::Tensor forward(const at::Tensor& x) {
    return adaptive_average ? F::adaptive_avg_pool2d(x, F::AdaptiveAvgPool2dFuncOptions({1, 1})) : F::max_pool2d(x, F::MaxPool2dFuncOptions(3).stride(2));
  }
  bool adaptive_average;
};

std::shared_ptr<BasicConvImpl> stem_conv(int64_t in, int64_t out, std::vector<int64_t> kernel, std::vector<int64_t> padding = {0, 0}, int64_t stride = 1) {
  return std::make_shared<BasicConvImpl>(in, out, std::move(kernel), std::move(padding), stride);
}

at::Tensor run_layer(const std::shared_ptr<torch::nn::Module>& layer, const at::Tensor& x) {
  if (auto conv = std::dynamic_pointer_cast<BasicConvImpl>(layer)) return conv->forward(x);
  if (auto pool = std::dynamic_pointer_cast<Pool>(layer)) return pool->forward(x);
  return std::dynamic_pointer_cast<MixedBlock>(layer)->forward(x);
}

}  // namespace

InceptionV3Impl::InceptionV3Impl() {
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  torch::nn::ModuleList block0, block1, block2, block3;
  block0->push_back(stem_conv(3, 32, {3, 3}, {0, 0}, 2));
  block0->push_back(stem_conv(32, 32, {3, 3}));
  block0->push_back(stem_conv(32, 64, {3, 3}, {1, 1}));
  block0->push_back(std::make_shared<Pool>(false));
  block1->push_back(stem_conv(64, 80, {1, 1}));
  block1->push_back(stem_conv(80, 192, {3, 3}));
  block1->push_back(std::make_shared<Pool>(false));
  block2->push_back(std::make_shared<FidInceptionA>(192, 32));
  block2->push_back(std::make_shared<FidInceptionA>(256, 64));
  block2->push_back(std::make_shared<FidInceptionA>(288, 64));
  block2->push_back(std::make_shared<InceptionB>(288));
  for (int64_t c7 : {128, 160, 160, 192}) block2->push_back(std::make_shared<FidInceptionC>(768, c7));
  block3->push_back(std::make_shared<InceptionD>(768));
  block3->push_back(std::make_shared<FidInceptionE>(1280, false));
  block3->push_back(std::make_shared<FidInceptionE>(2048, true));
  block3->push_back(std::make_shared<Pool>(true));
  for (auto& block : {block0, block1, block2, block3}) blocks_->push_back(block);
}

at::Tensor InceptionV3Impl::forward(const at::Tensor& x) {
  auto h = x;
  for (const auto& block : *blocks_)
    for (const auto& layer : *block->as<torch::nn::ModuleListImpl>()) h = run_layer(layer, h);
  return h.flatten(1);
}

InceptionV3 load_inception(const std::filesystem::path& path) {
  DISTILLERY_CHECK(std::filesystem::exists(path), Error("Inception weights not found").file(path.string())
                                                      .hint("convert pytorch-fid's pt_inception-2015-12-05-6726825d.pth with tools/convert_inception.py"));
  InceptionV3 net;
  load_module_tensors(*net, load_tensor_file(path).tensors, path.string());
  net->eval();
  return net;
}

at::Tensor inception_features(InceptionV3& net, const at::Tensor& images_uint8) {
  DISTILLERY_CHECK(images_uint8.dim() == 4 && images_uint8.scalar_type() == torch::kUInt8 && (images_uint8.size(1) == 1 || images_uint8.size(1) == 3),
                   Error("Inception features need uint8 images [N, 1 or 3, H, W]"));
  c10::InferenceMode inference;
  auto x = images_uint8.to(torch::kFloat32) / 255.0f;
  x = F::interpolate(x, F::InterpolateFuncOptions().size(std::vector<int64_t>{299, 299}).mode(torch::kBilinear).align_corners(false));
  // Grey images are replicated to RGB after the resize, which treats channels alike: the
  // same values for a third of the work.
  x = 2 * x - 1;
  if (x.size(1) == 1) x = x.expand({-1, 3, -1, -1});
  return net->forward(x).to(torch::kFloat64);
}

}  // namespace distillery
