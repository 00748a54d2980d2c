#include "foreign_device.h"

#include "io/tensor_file.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/EmptyTensor.h>
#include <ATen/detail/PrivateUse1HooksInterface.h>
#include <ATen/native/CPUFallback.h>
#include <ATen/native/Resize.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/core/impl/alloc_cpu.h>
#include <torch/library.h>
#include <gtest/gtest.h>
#include <torch/types.h>

#include <algorithm>
#include <cstring>
#include <mutex>

namespace distillery::testing {

namespace {

constexpr c10::DeviceType kForeign = c10::DeviceType::PrivateUse1;

std::mutex mixes_mutex;
ForeignDeviceMixes mixes;

struct ForeignAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t bytes) override {
    void* data = c10::alloc_cpu(bytes);
    return {data, data, &release, c10::Device(kForeign, 0)};
  }
  static void release(void* data) { c10::free_cpu(data); }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }
};
ForeignAllocator allocator;

// What ATen asks of a device type beyond its kernels: one device, always there, whose random
// numbers are the CPU generator's (its operations run on the CPU).
struct ForeignHooks final : at::PrivateUse1HooksInterface {
  bool isBuilt() const override { return true; }
  bool isAvailable() const override { return true; }
  bool hasPrimaryContext(c10::DeviceIndex) const override { return true; }
  c10::DeviceIndex deviceCount() const override { return 1; }
  const at::Generator& getDefaultGenerator(c10::DeviceIndex) const override { return at::detail::getDefaultCPUGenerator(); }
  c10::Device getDeviceFromPtr(void*) const override { return c10::Device(kForeign, 0); }
  void resizePrivateUse1Bytes(const c10::Storage& storage, size_t bytes) const override {
    auto* impl = storage.unsafeGetStorageImpl();
    auto fresh = allocator.allocate(bytes);
    if (impl->data() && fresh.get()) std::memcpy(fresh.get(), impl->data(), std::min(bytes, impl->nbytes()));
    impl->set_data_ptr_noswap(std::move(fresh));
    impl->set_nbytes(bytes);
  }
};
ForeignHooks hooks;

// The same memory seen as a CPU tensor, for the copies between the two device types.
at::Tensor host_view(const at::Tensor& t) {
  if (t.device().type() != kForeign) return t;
  c10::Storage storage(c10::Storage::use_byte_size_t{}, t.storage().nbytes(),
                       c10::DataPtr(t.storage().mutable_data_ptr().get(), c10::Device(c10::DeviceType::CPU)), nullptr, false);
  auto view = at::detail::make_tensor<c10::TensorImpl>(std::move(storage), c10::DispatchKeySet(c10::DispatchKey::CPU), t.dtype());
  view.unsafeGetTensorImpl()->set_sizes_and_strides(t.sizes(), t.strides());
  view.unsafeGetTensorImpl()->set_storage_offset(t.storage_offset());
  return view;
}

at::Tensor empty_memory_format(c10::IntArrayRef size, std::optional<c10::ScalarType> dtype, std::optional<c10::Layout>, std::optional<c10::Device>,
                               std::optional<bool>, std::optional<c10::MemoryFormat> memory_format) {
  return at::detail::empty_generic(size, &allocator, c10::DispatchKeySet(c10::DispatchKey::PrivateUse1), c10::dtype_or_default(dtype), memory_format);
}

at::Tensor empty_strided(c10::IntArrayRef size, c10::IntArrayRef stride, std::optional<c10::ScalarType> dtype, std::optional<c10::Layout>,
                         std::optional<c10::Device>, std::optional<bool>) {
  return at::detail::empty_strided_generic(size, stride, &allocator, c10::DispatchKeySet(c10::DispatchKey::PrivateUse1), c10::dtype_or_default(dtype));
}

at::Tensor copy_from(const at::Tensor& self, const at::Tensor& dst, bool /*non_blocking*/) {
  host_view(dst).copy_(host_view(self));
  return dst;
}

at::Tensor copy_from_and_resize(const at::Tensor& self, const at::Tensor& dst) {
  dst.resize_(self.sizes());
  return copy_from(self, dst, false);
}

const at::Tensor& resize(const at::Tensor& self, c10::IntArrayRef size, std::optional<c10::MemoryFormat> memory_format) {
  auto* impl = self.unsafeGetTensorImpl();
  impl->set_sizes_contiguous(size);
  at::native::maybe_resize_storage_cpu(impl, at::detail::computeStorageNbytesContiguous(size, impl->dtype().itemsize(), impl->storage_offset()));
  if (memory_format) impl->empty_tensor_restride(*memory_format);
  return self;
}

at::Tensor& set_storage(at::Tensor& self, c10::Storage storage, int64_t offset, c10::IntArrayRef size, c10::IntArrayRef stride) {
  self.unsafeGetTensorImpl()->set_storage_keep_dtype(std::move(storage));
  self.unsafeGetTensorImpl()->set_storage_offset(offset);
  at::native::resize_impl_cpu_(self.unsafeGetTensorImpl(), size, stride.data() ? at::OptionalIntArrayRef(stride) : std::nullopt, true);
  return self;
}

// Modules move their parameters with set_data, which ATen allows between its own dense device
// types only; host memory is host memory, so moving to and from this one is as safe.
bool compatible_for_set_data(const at::Tensor&, const at::Tensor&) { return true; }

// A CPU tensor with elements beside a foreign one: what CUDA rejects as "expected all tensors
// to be on the same device". 0-dimensional CPU tensors are scalars every device accepts.
bool mixes_devices(const torch::jit::Stack& stack, size_t first, size_t count) {
  bool foreign = false, host = false;
  const auto look = [&](const at::Tensor& t) {
    if (!t.defined()) return;
    foreign |= t.device().type() == kForeign;
    host |= t.device().is_cpu() && t.dim() > 0;
  };
  for (size_t i = first; i < first + count; ++i) {
    const auto& value = stack[i];
    if (value.isTensor()) look(value.toTensor());
    else if (value.isTensorList()) for (const auto& t : value.toTensorList()) look(t);
    else if (value.isList()) for (const auto& item : value.toListRef()) if (item.isTensor()) look(item.toTensor());
  }
  return foreign && host;
}

void fallback(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto arguments = op.schema().arguments().size();
  if (mixes_devices(*stack, stack->size() - arguments, arguments)) {
    {
      std::lock_guard lock(mixes_mutex);
      if (mixes.count++ == 0) mixes.first = op.schema().name();
    }
    TORCH_CHECK(false, "foreign device: ", op.schema().name(), " mixes a foreign-device tensor with a CPU tensor");
  }
  at::native::cpu_fallback(op, stack);
}

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  m.impl("empty.memory_format", &empty_memory_format);
  m.impl("empty_strided", &empty_strided);
  m.impl("_copy_from", &copy_from);
  m.impl("_copy_from_and_resize", &copy_from_and_resize);
  m.impl("resize_", &resize);
  m.impl("set_.source_Storage_storage_offset", &set_storage);
  m.impl("as_strided", at::native::as_strided_tensorimpl);
  m.impl("view", at::native::view);
  m.impl("_reshape_alias", at::native::_reshape_alias);
  m.impl("_has_compatible_shallow_copy_type", &compatible_for_set_data);
}

// Operations whose generic (CompositeExplicitAutograd) kernel would otherwise run on this
// device type instead of the CPU kernel: convolution has none for an unknown device type, and
// group norm's generic one rounds differently from the CPU's.
TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  for (const char* op : {"convolution", "convolution_backward", "native_group_norm", "native_group_norm_backward"})
    m.impl(op, torch::CppFunction::makeFromBoxedFunction<&fallback>());
}

TORCH_LIBRARY_IMPL(_, PrivateUse1, m) { m.fallback(torch::CppFunction::makeFromBoxedFunction<&fallback>()); }

// One device (index 0) with one stream. Work on it is finished when its call returns, so the
// events the autograd engine records between devices have nothing to wait for.
struct ForeignGuard final : c10::impl::NoOpDeviceGuardImpl<c10::DeviceType::PrivateUse1> {
  static c10::Device device() { return c10::Device(kForeign, 0); }
  static c10::Stream stream() { return c10::Stream(c10::Stream::DEFAULT, device()); }
  c10::Device exchangeDevice(c10::Device) const override { return device(); }
  c10::Device getDevice() const override { return device(); }
  c10::Stream getStream(c10::Device) const noexcept override { return stream(); }
  c10::Stream getDefaultStream(c10::Device) const override { return stream(); }
  c10::Stream getNewStream(c10::Device, int) const override { return stream(); }
  c10::Stream exchangeStream(c10::Stream) const noexcept override { return stream(); }
  void record(void** event, const c10::Stream&, const c10::DeviceIndex, const c10::EventFlag) const override { *event = const_cast<ForeignGuard*>(this); }
  void block(void*, const c10::Stream&) const override {}
  bool queryEvent(void*) const override { return true; }
};
C10_REGISTER_GUARD_IMPL(PrivateUse1, ForeignGuard);

}  // namespace

c10::Device foreign_device() {
  static std::once_flag once;
  std::call_once(once, [] {
    c10::register_privateuse1_backend("foreign");
    c10::SetAllocator(kForeign, &allocator);
    at::RegisterPrivateUse1HooksInterface(&hooks);
  });
  return c10::Device(kForeign, 0);
}

double max_tensor_file_difference(const std::filesystem::path& a, const std::filesystem::path& b) {
  const auto first = load_tensor_file(a), second = load_tensor_file(b);
  EXPECT_EQ(first.tensors.size(), second.tensors.size()) << a << " and " << b << " hold different tensors";
  double worst = 0;
  for (const auto& [name, tensor] : second.tensors) {
    const auto other = first.tensors.find(name);
    if (other == first.tensors.end()) {
      ADD_FAILURE() << a << " lacks " << name;
      return INFINITY;
    }
    const auto x = other->second.to(torch::kFloat64), y = tensor.to(torch::kFloat64);
    const double scale = std::max(y.abs().max().item<double>(), 1e-30);
    worst = std::max(worst, (x - y).abs().max().item<double>() / scale);
  }
  return worst;
}

ForeignDeviceMixes foreign_device_mixes() {
  std::lock_guard lock(mixes_mutex);
  return mixes;
}

}  // namespace distillery::testing
