// defines: keep_freed_memory
// Process-wide memory-allocator settings for the project's programs.
#pragma once

namespace distillery {

// Tensor memory freed by one batch is needed again by the next. glibc's malloc serves blocks
// above its mmap threshold (at most 32 MiB) with fresh mmaps and trims the heap's top once
// enough is free, so each batch's activations come back as new pages that the kernel must
// fault in and zero: Inception at batch 50 (277 MB activations) spent a third of its time in
// the kernel that way. This keeps freed memory in the heap for reuse; the resident size stays
// at its peak instead of shrinking between batches. No effect outside glibc.
void keep_freed_memory();

}  // namespace distillery
