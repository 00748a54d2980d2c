#include "models/song_unet.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/error.h"

namespace distillery {

void add_song_unet_fields(ConfigSchema& schema, const std::string& prefix) {
  const SongUNetConfig d;
  schema.add({prefix + "encoder_type", ConfigType::String, "song_unet: encoder (DDPM++ standard, NCSN++ residual)", d.encoder_type, false,
              {"standard", "skip", "residual"}});
  schema.add({prefix + "decoder_type", ConfigType::String, "song_unet: decoder", d.decoder_type, false, {"standard", "skip"}});
  schema.add({prefix + "resample_filter", ConfigType::IntList, "song_unet: resampling filter taps (DDPM++ [1, 1], NCSN++ [1, 3, 3, 1])", "[1, 1]"},
             NumberRange::between(0, 1000));
  schema.add({prefix + "channel_mult_noise", ConfigType::Int, "song_unet: noise embedding width per model channel (DDPM++ 1, NCSN++ 2)",
              std::to_string(d.channel_mult_noise)}, NumberRange::between(1, 64));
  schema.add({prefix + "channel_mult_emb", ConfigType::Int, "song_unet, dhariwal_unet: embedding width per model channel",
              std::to_string(d.channel_mult_emb)}, NumberRange::between(1, 64));
  schema.add({prefix + "augment_dim", ConfigType::Int, "song_unet, dhariwal_unet: augmentation label width (0: none; zero at inference)",
              std::to_string(d.augment_dim)}, NumberRange::between(0, 1024));
}

SongUNetConfig::SongUNetConfig() {
  channel_mult = {1, 2, 2, 2};
  attn_resolutions = {16};
}

SongUNetConfig song_unet_config_from(const Config& config, const std::string& prefix) {
  SongUNetConfig c;
  read_edm_unet_common(config, prefix, c);
  c.noise_embedding = config.get_string(prefix + "noise_embedding");
  c.channel_mult_noise = config.get_int(prefix + "channel_mult_noise");
  c.encoder_type = config.get_string(prefix + "encoder_type");
  c.decoder_type = config.get_string(prefix + "decoder_type");
  c.resample_filter = config.get_int_list(prefix + "resample_filter");
  return c;
}

std::string song_unet_config_json(const SongUNetConfig& c) {
  nlohmann::json model = {{"kind", "song_unet"}};
  write_edm_unet_common(c, model);
  model.update({{"noise_embedding", c.noise_embedding}, {"channel_mult_noise", c.channel_mult_noise}, {"encoder_type", c.encoder_type},
                {"decoder_type", c.decoder_type}, {"resample_filter", c.resample_filter}});
  return model.dump();
}

SongUNetImpl::SongUNetImpl(SongUNetConfig config) : config_(std::move(config)) {
  const auto& c = config_;
  const int64_t levels = static_cast<int64_t>(c.channel_mult.size());
  DISTILLERY_CHECK(levels >= 1 && c.resolution % (int64_t{1} << (levels - 1)) == 0,
                   Error(fmt::format("resolution {} cannot be halved {} times", c.resolution, levels - 1)).field("model.resolution"));
  const int64_t emb_channels = c.model_channels * c.channel_mult_emb, noise_channels = c.model_channels * c.channel_mult_noise;
  DISTILLERY_CHECK(noise_channels % 2 == 0 && noise_channels >= 4,
                   Error("the noise embedding pairs cos and sin").field("model.model_channels").expected("model_channels × channel_mult_noise even and ≥ 4"));
  const EdmInit init{EdmInit::Mode::XavierUniform}, init_zero{EdmInit::Mode::XavierUniform, 1e-5}, init_attn{EdmInit::Mode::XavierUniform, std::sqrt(0.2)};
  EdmBlockOptions block{.emb_channels = emb_channels, .num_heads = 1, .dropout = c.dropout, .skip_scale = std::sqrt(0.5), .eps = 1e-6,
                        .resample_filter = c.resample_filter, .resample_proj = true, .adaptive_scale = false,
                        .init = init, .init_zero = init_zero, .init_attn = init_attn};
  const auto with = [&](EdmResample resample, bool attention) {
    auto o = block;
    o.resample = resample;
    o.attention = attention;
    return o;
  };
  const auto attends = [&](int64_t res) { return std::find(c.attn_resolutions.begin(), c.attn_resolutions.end(), res) != c.attn_resolutions.end(); };

  if (c.noise_embedding == "fourier") fourier_ = register_module("map_noise", FourierEmbedding(noise_channels));
  if (c.num_classes > 0) map_label_ = register_module("map_label", edm_linear(c.num_classes, noise_channels, true, init));
  if (c.augment_dim > 0) map_augment_ = register_module("map_augment", edm_linear(c.augment_dim, noise_channels, false, init));
  map_layer0_ = register_module("map_layer0", edm_linear(noise_channels, emb_channels, true, init));
  map_layer1_ = register_module("map_layer1", edm_linear(emb_channels, emb_channels, true, init));

  enc_ = register_module("enc", torch::nn::ModuleDict());
  dec_ = register_module("dec", torch::nn::ModuleDict());
  std::vector<int64_t> skips;
  int64_t cout = c.in_channels, caux = c.in_channels;
  const auto add = [&](torch::nn::ModuleDict& dict, std::vector<Role>& roles, const std::string& name, std::shared_ptr<torch::nn::Module> module,
                       Role role, int64_t channels, int64_t res) {
    dict->update({{name, std::move(module)}});
    roles.push_back(role);
    if (role == Role::Block || role == Role::Conv) taps_.push_back({fmt::format("{}.{}", &dict == &enc_ ? "enc" : "dec", name), {channels, res, res}});
  };
  for (int64_t level = 0; level < levels; ++level) {
    const int64_t res = c.resolution >> level;
    const auto prefix = fmt::format("{}x{}_", res, res);
    if (level == 0) {
      const int64_t cin = cout;
      cout = c.model_channels;
      add(enc_, enc_roles_, prefix + "conv", EdmConv2d(cin, cout, 3, true, EdmResample::None, kNoFilter, false, init).ptr(), Role::Conv, cout, res);
      skips.push_back(cout);
    } else {
      add(enc_, enc_roles_, prefix + "down", EdmUNetBlock(cout, cout, with(EdmResample::Down, false)).ptr(), Role::Block, cout, res);
      skips.push_back(cout);
      if (c.encoder_type == "skip") {
        add(enc_, enc_roles_, prefix + "aux_down", EdmConv2d(caux, caux, 0, true, EdmResample::Down, c.resample_filter, false, EdmInit{}).ptr(), Role::AuxDown, caux, res);
        add(enc_, enc_roles_, prefix + "aux_skip", EdmConv2d(caux, cout, 1, true, EdmResample::None, kNoFilter, false, init).ptr(), Role::AuxSkip, cout, res);
      }
      if (c.encoder_type == "residual") {
        add(enc_, enc_roles_, prefix + "aux_residual", EdmConv2d(caux, cout, 3, true, EdmResample::Down, c.resample_filter, true, init).ptr(),
            Role::AuxResidual, cout, res);
        caux = cout;
      }
    }
    for (int64_t i = 0; i < c.blocks_per_level; ++i) {
      const int64_t cin = cout;
      cout = c.model_channels * c.channel_mult[static_cast<size_t>(level)];
      add(enc_, enc_roles_, fmt::format("{}block{}", prefix, i), EdmUNetBlock(cin, cout, with(EdmResample::None, attends(res))).ptr(), Role::Block, cout, res);
      skips.push_back(cout);
    }
  }
  for (int64_t level = levels - 1; level >= 0; --level) {
    const int64_t res = c.resolution >> level;
    const auto prefix = fmt::format("{}x{}_", res, res);
    if (level == levels - 1) {
      add(dec_, dec_roles_, prefix + "in0", EdmUNetBlock(cout, cout, with(EdmResample::None, true)).ptr(), Role::Block, cout, res);
      add(dec_, dec_roles_, prefix + "in1", EdmUNetBlock(cout, cout, with(EdmResample::None, false)).ptr(), Role::Block, cout, res);
    } else {
      add(dec_, dec_roles_, prefix + "up", EdmUNetBlock(cout, cout, with(EdmResample::Up, false)).ptr(), Role::Block, cout, res);
    }
    for (int64_t i = 0; i <= c.blocks_per_level; ++i) {
      const int64_t cin = cout + skips.back();
      skips.pop_back();
      cout = c.model_channels * c.channel_mult[static_cast<size_t>(level)];
      const bool attention = i == c.blocks_per_level && attends(res);
      add(dec_, dec_roles_, fmt::format("{}block{}", prefix, i), EdmUNetBlock(cin, cout, with(EdmResample::None, attention)).ptr(), Role::Block, cout, res);
    }
    if (c.decoder_type == "skip" || level == 0) {
      if (c.decoder_type == "skip" && level < levels - 1)
        add(dec_, dec_roles_, prefix + "aux_up", EdmConv2d(c.out_channels, c.out_channels, 0, true, EdmResample::Up, c.resample_filter, false, EdmInit{}).ptr(),
            Role::AuxUp, c.out_channels, res);
      add(dec_, dec_roles_, prefix + "aux_norm", edm_group_norm(cout, 1e-6).ptr(), Role::AuxNorm, cout, res);
      add(dec_, dec_roles_, prefix + "aux_conv", EdmConv2d(cout, c.out_channels, 3, true, EdmResample::None, kNoFilter, false, init_zero).ptr(), Role::AuxConv,
          c.out_channels, res);
    }
  }
}

at::Tensor SongUNetImpl::embed(const at::Tensor& c_noise, const at::Tensor& labels) {
  const int64_t noise_channels = config_.model_channels * config_.channel_mult_noise;
  const auto noise = c_noise.to(torch::kFloat32);
  auto emb = fourier_ ? fourier_->forward(noise) : positional_embedding(noise, noise_channels, true);
  // DDPM++ and NCSN++ feed sin before cos.
  emb = emb.reshape({emb.size(0), 2, -1}).flip(1).reshape(emb.sizes());
  if (map_label_) {
    const auto one_hot = class_embedding_input(labels, config_.num_classes);
    emb = emb + map_label_->forward(one_hot * std::sqrt(static_cast<double>(config_.num_classes)));
  }
  emb = torch::silu(map_layer0_->forward(emb));
  return torch::silu(map_layer1_->forward(emb));
}

at::Tensor SongUNetImpl::run(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const FeatureVisitor* visit) {
  size_t next_tap = 0;
  const auto ends_here = [&](const at::Tensor& features) { return visit && !(*visit)(taps_[next_tap++].name, features); };
  const auto emb = embed(c_noise, labels);
  std::vector<at::Tensor> skips;
  at::Tensor x = x_in, aux = x_in;
  size_t i = 0;
  for (const auto& item : *enc_) {
    auto& module = *item.value();
    switch (enc_roles_[i++]) {
      case Role::AuxDown: aux = module.as<EdmConv2dImpl>()->forward(aux); break;
      case Role::AuxSkip: x = skips.back() = x + module.as<EdmConv2dImpl>()->forward(aux); break;
      case Role::AuxResidual: x = skips.back() = aux = (x + module.as<EdmConv2dImpl>()->forward(aux)) / std::sqrt(2.0); break;
      case Role::Conv:
        x = module.as<EdmConv2dImpl>()->forward(x);
        skips.push_back(x);
        if (ends_here(x)) return {};
        break;
      default:
        x = module.as<EdmUNetBlockImpl>()->forward(x, emb);
        skips.push_back(x);
        if (ends_here(x)) return {};
    }
  }
  at::Tensor out, normed;
  i = 0;
  for (const auto& item : *dec_) {
    auto& module = *item.value();
    switch (dec_roles_[i++]) {
      case Role::AuxUp: out = module.as<EdmConv2dImpl>()->forward(out); break;
      case Role::AuxNorm: normed = module.as<torch::nn::GroupNormImpl>()->forward(x); break;
      case Role::AuxConv: {
        const auto level_out = module.as<EdmConv2dImpl>()->forward(torch::silu(normed));
        out = out.defined() ? level_out + out : level_out;
        break;
      }
      default: {
        auto* block = module.as<EdmUNetBlockImpl>();
        if (x.size(1) != block->in_channels()) {
          x = torch::cat({x, skips.back()}, 1);
          skips.pop_back();
        }
        x = block->forward(x, emb);
        if (ends_here(x)) return {};
      }
    }
  }
  return out;
}

at::Tensor SongUNetImpl::forward(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels) { return run(x_in, c_noise, labels, nullptr); }

void SongUNetImpl::features(const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor& labels, const FeatureVisitor& visit) {
  run(x_in, c_noise, labels, &visit);
}

}  // namespace distillery
