// defines: EdmUNetCommon, read_edm_unet_common, write_edm_unet_common, EdmInit, edm_linear, edm_group_norm, EdmConv2dImpl, EdmConv2d, EdmBlockOptions, EdmUNetBlockImpl, EdmUNetBlock,
//          FourierEmbeddingImpl, FourierEmbedding, positional_embedding, class_embedding_input
// The layers of the networks published with EDM (Karras et al. 2022): DDPM++ and NCSN++ (Song
// et al. 2021) and ADM (Dhariwal & Nichol 2021) as EDM re-expressed them. Parameters and
// buffers carry the published names (conv0, affine, qkv, resample_filter, freqs, ...) so that a
// published state dict loads key for key; behaviour follows the published networks exactly,
// including the channel order of the fused q/k/v projection and the resampling filters.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <vector>

namespace distillery {

class Config;

// The arguments EDM's SongUNet and DhariwalUNet share (under distillery's key names; each
// network's config sets its own defaults).
struct EdmUNetCommon {
  int64_t in_channels = 3;
  int64_t out_channels = 3;
  int64_t resolution = 32;
  int64_t model_channels = 128;
  std::vector<int64_t> channel_mult;
  int64_t channel_mult_emb = 4;                   // embedding width = model_channels × this
  int64_t blocks_per_level = 4;                   // EDM's num_blocks
  std::vector<int64_t> attn_resolutions;
  double dropout = 0.10;
  int64_t num_classes = 0;                        // EDM's label_dim
  int64_t augment_dim = 0;                        // width of the augmentation labels (zero at inference)
  double label_dropout = 0.0;
};
// Reads those keys under `prefix` into `common`; writes them into a config's model section.
void read_edm_unet_common(const Config& config, const std::string& prefix, EdmUNetCommon& common);
void write_edm_unet_common(const EdmUNetCommon& common, nlohmann::json& model);

// How a fresh layer draws its weights (EDM's weight_init): uniform or normal with the fan-in /
// fan-out scale of the mode, times `weight` (biases drawn the same way, times `bias`).
struct EdmInit {
  enum class Mode { XavierUniform, KaimingUniform, KaimingNormal };
  Mode mode = Mode::KaimingNormal;
  double weight = 1.0;
  double bias = 0.0;
};

torch::nn::Linear edm_linear(int64_t in, int64_t out, bool bias, const EdmInit& init);
// GroupNorm with at most 32 groups of at least 4 channels each.
torch::nn::GroupNorm edm_group_norm(int64_t channels, double eps);

enum class EdmResample { None, Up, Down };
inline const std::vector<int64_t> kNoFilter = {};  // the filter of a convolution that does not resample

// A convolution (kernel 0: resampling only) with optional 2× resampling by a separable FIR
// filter ([1,1]: box, [1,3,3,1]: bilinear-like) applied depthwise before it, or after it when
// `fused` (EDM fuses only downsampling, in NCSN++'s residual encoder path).
class EdmConv2dImpl : public torch::nn::Module {
 public:
  EdmConv2dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel, bool bias, EdmResample resample, const std::vector<int64_t>& filter,
                bool fused, const EdmInit& init);
  at::Tensor forward(const at::Tensor& x);
  int64_t out_channels() const { return out_channels_; }

 private:
  int64_t in_channels_, out_channels_;
  EdmResample resample_;
  bool fused_;
  at::Tensor weight_, bias_, resample_filter_;
};
TORCH_MODULE(EdmConv2d);

struct EdmBlockOptions {
  int64_t emb_channels = 0;
  EdmResample resample = EdmResample::None;
  bool attention = false;
  int64_t num_heads = 0;           // with attention: 0 means out_channels / channels_per_head (may be 0: no attention)
  int64_t channels_per_head = 64;
  double dropout = 0.0;
  double skip_scale = 1.0;
  double eps = 1e-5;
  std::vector<int64_t> resample_filter = {1, 1};
  bool resample_proj = false;      // a 1×1 projection on the resampled skip path even when the channels match
  bool adaptive_scale = true;      // the embedding gives scale and shift (ADM) or a shift added before the norm (DDPM++)
  EdmInit init, init_zero, init_attn;
};

// The unified residual block of DDPM++, NCSN++ and ADM: norm-SiLU-conv (resampling), the
// embedding's modulation, norm-SiLU-dropout-conv, the skip path, optionally self-attention.
class EdmUNetBlockImpl : public torch::nn::Module {
 public:
  EdmUNetBlockImpl(int64_t in_channels, int64_t out_channels, const EdmBlockOptions& options);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& emb);
  int64_t in_channels() const { return in_channels_; }
  int64_t out_channels() const { return out_channels_; }

 private:
  int64_t in_channels_, out_channels_, num_heads_;
  double dropout_, skip_scale_;
  bool adaptive_scale_;
  torch::nn::GroupNorm norm0_{nullptr}, norm1_{nullptr}, norm2_{nullptr};
  EdmConv2d conv0_{nullptr}, conv1_{nullptr}, skip_{nullptr}, qkv_{nullptr}, proj_{nullptr};
  torch::nn::Linear affine_{nullptr};
};
TORCH_MODULE(EdmUNetBlock);

// NCSN++'s noise embedding: random frequencies (normal, scale 16) kept as the buffer `freqs`.
class FourierEmbeddingImpl : public torch::nn::Module {
 public:
  explicit FourierEmbeddingImpl(int64_t channels);
  at::Tensor forward(const at::Tensor& c_noise);  // [N] -> [N, channels]: cos then sin

 private:
  at::Tensor freqs_;
};
TORCH_MODULE(FourierEmbedding);

// DDPM++'s and ADM's embedding: angles c_noise·(1/10000)^(j/(channels/2 − endpoint)), cos then sin.
at::Tensor positional_embedding(const at::Tensor& c_noise, int64_t channels, bool endpoint);

// The label input of the networks from our labels ([N] int64, −1: no label): one-hot rows in
// `dtype`, zero for −1 (EDM's unconditional input). Label dropout is the training step's: it
// sets a row's label to −1 by the row's sample position (data/augment.h), so a network never
// draws it.
at::Tensor class_embedding_input(const at::Tensor& labels, int64_t num_classes, c10::ScalarType dtype = c10::ScalarType::Float);

}  // namespace distillery
