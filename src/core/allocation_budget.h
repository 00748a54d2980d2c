// defines: AllocationBudget
// A ceiling on the CPU tensor memory one thread allocates while a budget is in scope. A
// network built from sizes a file declares stops at the first allocation beyond what the
// file's own weights justify, before the memory is taken, instead of being ended by the OOM
// killer (a 4.5 MB student whose metadata said model_channels 4096 asked for about 24 GB).
// Every allocation counts, freed or not: building a network allocates little it frees again.
// Allocations of other threads, and of this one outside the scope, are not counted.
#pragma once

#include <cstddef>
#include <functional>

#include "core/error.h"

namespace distillery {

class AllocationBudget {
 public:
  // `refusal(bytes)` is the error thrown when an allocation would bring the bytes allocated
  // in this scope to `bytes`, more than `limit`.
  AllocationBudget(size_t limit, std::function<Error(size_t bytes)> refusal);
  ~AllocationBudget();
  AllocationBudget(const AllocationBudget&) = delete;
  AllocationBudget& operator=(const AllocationBudget&) = delete;

  size_t allocated() const { return allocated_; }

 private:
  friend class BudgetedAllocator;
  size_t limit_;
  std::function<Error(size_t)> refusal_;
  size_t allocated_ = 0;
};

}  // namespace distillery
