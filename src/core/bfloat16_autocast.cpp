#include "core/bfloat16_autocast.h"

#include <ATen/autocast_mode.h>

namespace distillery {

Bfloat16Autocast::Bfloat16Autocast(c10::DeviceType device)
    : device_(device), was_enabled_(at::autocast::is_autocast_enabled(device)), was_dtype_(at::autocast::get_autocast_dtype(device)) {
  at::autocast::set_autocast_enabled(device_, true);
  at::autocast::set_autocast_dtype(device_, at::kBFloat16);
  at::autocast::increment_nesting();
}

Bfloat16Autocast::~Bfloat16Autocast() {
  // Casts of weights are cached within the outermost scope: stale once an optimiser stepped.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(device_, was_enabled_);
  at::autocast::set_autocast_dtype(device_, was_dtype_);
}

}  // namespace distillery
