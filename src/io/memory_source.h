// An in-memory source: bytes in a vector (owned) or a span (borrowed), with whatever caps a test
// wants the engine to see. With caps.direct_io, Submit() refuses unaligned batches like a real
// O_DIRECT source (kInvalidArgument, from Source::Submit()'s validation). Requests complete
// synchronously inside Submit() (the default Source::DoSubmit()).
//
// Thread-safety: all methods, from any thread.
#ifndef FLASHLOAD_IO_MEMORY_SOURCE_H_
#define FLASHLOAD_IO_MEMORY_SOURCE_H_

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "flashload/source.h"

namespace flashload {

struct MemorySourceOptions {
  std::string name = "memory";
  SourceCaps caps = [] {
    SourceCaps c;
    c.max_in_flight = 16;
    return c;
  }();
};

// Owns `bytes`.
std::unique_ptr<Source> NewMemorySource(std::vector<std::byte> bytes,
                                        MemorySourceOptions options = {});
// Borrows `bytes`, which must outlive the source.
std::unique_ptr<Source> NewMemorySourceView(std::span<const std::byte> bytes,
                                            MemorySourceOptions options = {});

}  // namespace flashload

#endif  // FLASHLOAD_IO_MEMORY_SOURCE_H_
