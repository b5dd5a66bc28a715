// libFuzzer target for the S3 XML scanner, the ListObjectsV2 parser and the error-body parser: any
// input either fails with kDataLoss naming the byte offset, or yields a bounded tree and a
// consistent listing; an error status built from any body is never OK.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "io/s3_list.h"

namespace {

void Check(bool condition) {
  if (!condition) std::abort();
}

// Checks depth, offsets (inside the input, increasing in document order) and counts the elements.
size_t Walk(const flashload::XmlElement& e, int depth, size_t size, size_t& last_offset) {
  Check(depth <= flashload::kMaxS3XmlDepth);
  Check(e.offset < size);
  Check(e.offset >= last_offset);
  last_offset = e.offset;
  Check(!e.name.empty());
  size_t n = 1;
  for (const flashload::XmlElement& c : e.children) n += Walk(c, depth + 1, size, last_offset);
  return n;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view xml(reinterpret_cast<const char*>(data), size);
  flashload::Result<flashload::XmlElement> root = flashload::ParseS3Xml(xml, "fuzz");
  if (root.ok()) {
    size_t last = 0;
    Walk(*root, 1, size, last);
  } else {
    Check(root.status().code() == flashload::StatusCode::kDataLoss);
    Check(root.status().message().find("byte") != std::string_view::npos);
  }

  flashload::Result<flashload::S3ListPage> page = flashload::ParseListObjectsV2(xml, "fuzz");
  if (page.ok()) {
    Check(root.ok() && root->local_name() == "ListBucketResult");
    Check(!page->is_truncated || !page->next_continuation_token.empty());
  } else {
    Check(!page.status().message().empty());
  }

  flashload::Result<flashload::S3ErrorInfo> info = flashload::ParseS3ErrorXml(xml);
  Check(info.ok() == (root.ok() && root->local_name() == "Error"));
  for (int http : {200, 403, 404, 503}) {
    const flashload::Status s = flashload::S3ErrorToStatus(http, xml, "fuzz");
    Check(!s.ok() && !s.message().empty());
  }
  return 0;
}
