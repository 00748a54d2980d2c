#include "core/allocation_budget.h"

#include <c10/core/CPUAllocator.h>

#include <limits>

namespace distillery {

namespace {
thread_local AllocationBudget* active_budget = nullptr;
}  // namespace

// Wraps the CPU allocator once, for the life of the process. It only counts: the blocks, and
// with them raw_allocate/raw_deallocate, are the underlying allocator's own.
class BudgetedAllocator final : public c10::Allocator {
 public:
  explicit BudgetedAllocator(c10::Allocator* underlying) : underlying_(underlying) {}

  c10::DataPtr allocate(size_t bytes) override {
    if (auto* budget = active_budget) {
      if (budget->allocated_ + bytes > budget->limit_) throw budget->refusal_(budget->allocated_ + bytes);
      budget->allocated_ += bytes;
    }
    return underlying_->allocate(bytes);
  }
  c10::DeleterFnPtr raw_deleter() const override { return underlying_->raw_deleter(); }
  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }

 private:
  c10::Allocator* underlying_;
};

AllocationBudget::AllocationBudget(size_t limit, std::function<Error(size_t bytes)> refusal) : limit_(limit), refusal_(std::move(refusal)) {
  static const bool installed = [] {
    c10::SetCPUAllocator(new BudgetedAllocator(c10::GetCPUAllocator()), std::numeric_limits<uint8_t>::max());
    return true;
  }();
  (void)installed;
  DISTILLERY_CHECK(!active_budget, Error("allocation budgets do not nest"));
  active_budget = this;
}

AllocationBudget::~AllocationBudget() { active_budget = nullptr; }

}  // namespace distillery
