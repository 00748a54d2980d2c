#include "kernels/attention_speed_table.h"

namespace distillery {

const std::vector<MeasuredAttentionShape>& measured_attention_shapes() {
  using c10::ScalarType::BFloat16, c10::ScalarType::Float;
  // One NVIDIA H200, 2026-11-29, PyTorch 2.11.0+cu130: `attention_check`'s benchmark (its
  // `benchmark` and `other_shapes` entries; docs/attention.md, "GPU figures"). Times in ms:
  // fused forward (16 rows per warp, the default), SDPA forward, and both forward+backward.
  static const std::vector<MeasuredAttentionShape> shapes = {
      {BFloat16, 64, 64, 32, 0.0105673, 0.025216, 0.19876, 0.168171},
      {BFloat16, 64, 64, 64, 0.016159, 0.0257783, 0.213908, 0.227925},
      {BFloat16, 64, 64, 128, 0.0165776, 0.016595, 0.164912, 0.150334},
      {BFloat16, 64, 256, 32, 0.0101761, 0.0166752, 0.191081, 0.179034},
      {BFloat16, 64, 256, 64, 0.0121946, 0.0241708, 0.168174, 0.224737},
      {BFloat16, 64, 256, 128, 0.0185653, 0.0206867, 0.168428, 0.203245},
      {BFloat16, 64, 1024, 32, 0.062571, 0.0444529, 0.305707, 0.218665},
      {BFloat16, 64, 1024, 64, 0.0983989, 0.0450128, 0.506633, 0.210908},
      {BFloat16, 64, 1024, 128, 0.183834, 0.0606652, 1.03446, 0.315601},
      {BFloat16, 64, 4096, 32, 0.873685, 0.581002, 3.80252, 2.12407},
      {BFloat16, 64, 4096, 64, 1.42262, 0.616541, 6.23121, 2.29977},
      {BFloat16, 64, 4096, 128, 2.64878, 0.844346, 13.6615, 3.39911},
      {BFloat16, 512, 64, 32, 0.0126584, 0.026335, 0.34081, 0.203771},
      {BFloat16, 512, 64, 64, 0.0115311, 0.0183267, 0.242379, 0.196104},
      {BFloat16, 512, 64, 128, 0.0186912, 0.0172753, 0.36317, 0.343486},
      {BFloat16, 512, 256, 32, 0.0358694, 0.0300164, 0.274951, 0.225506},
      {BFloat16, 512, 256, 64, 0.0599412, 0.0317644, 0.398422, 0.195537},
      {BFloat16, 512, 256, 128, 0.125998, 0.0428625, 0.795517, 0.288554},
      {BFloat16, 512, 1024, 32, 0.44553, 0.315719, 2.2509, 1.24266},
      {BFloat16, 512, 1024, 64, 0.721408, 0.318346, 3.70785, 1.36496},
      {BFloat16, 512, 1024, 128, 1.41414, 0.438674, 8.05455, 2.1231},
      {BFloat16, 512, 4096, 32, 6.72395, 4.45143, 30.7428, 16.1417},
      {BFloat16, 512, 4096, 64, 11.7398, 4.59315, 51.9835, 16.6707},
      {BFloat16, 512, 4096, 128, 24.5014, 6.74783, 113.646, 29.268},
      {BFloat16, 128, 49, 32, 0.0161175, 0.0254493, 0.166365, 0.257851},
      {Float, 128, 49, 32, 0.017617, 0.0178365, 0.14096, 0.172191},
      {Float, 64, 256, 64, 0.15827, 0.0426894, 0.669263, 0.242711},
      {Float, 64, 1024, 64, 2.33072, 0.543531, 9.70017, 1.85577},
  };
  return shapes;
}

bool fused_attention_measured_faster(c10::ScalarType dtype, int64_t batch_heads, int64_t tokens, int64_t head_dim, bool with_backward) {
  const MeasuredAttentionShape* covering = nullptr;
  for (const auto& shape : measured_attention_shapes()) {
    if (shape.dtype != dtype || shape.head_dim != head_dim || shape.tokens < tokens || shape.batch_heads < batch_heads) continue;
    if (!covering || shape.tokens < covering->tokens || (shape.tokens == covering->tokens && shape.batch_heads < covering->batch_heads)) covering = &shape;
  }
  if (!covering) return false;
  return with_backward ? covering->fused_fwd_bwd_ms <= covering->sdpa_fwd_bwd_ms : covering->fused_ms <= covering->sdpa_ms;
}

}  // namespace distillery
