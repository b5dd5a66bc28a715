#include "io/http_status.h"

#include "common/strings.h"

namespace flashload {

StatusCode HttpStatusCode(int http_status, bool size_known) {
  if (http_status == 404) return StatusCode::kNotFound;
  if (http_status == 401 || http_status == 403) return StatusCode::kFailedPrecondition;
  if (http_status == 408 || http_status == 429 || (http_status >= 500 && http_status <= 599)) {
    return StatusCode::kUnavailable;
  }
  if (http_status == 412) return StatusCode::kDataLoss;
  if (http_status == 416) return size_known ? StatusCode::kDataLoss : StatusCode::kOutOfRange;
  if (http_status >= 400 && http_status <= 499) return StatusCode::kInvalidArgument;
  return StatusCode::kIoError;
}

StatusCode HttpErrorCode(int http_status, const ServiceError* said, bool size_known) {
  if (said != nullptr && said->status) return *said->status;
  return HttpStatusCode(http_status, size_known);
}

std::string ErrorBodySnippet(std::string_view body) {
  if (body.find("Signature") != std::string_view::npos) return "";
  return PrintableSnippet(body, kQuotedBodyBytes);
}

std::string DescribeServiceError(const ServiceError& said) {
  std::string out = PrintableSnippet(said.code, kQuotedBodyBytes);
  const std::string message = PrintableSnippet(said.message, kQuotedBodyBytes);
  if (!message.empty()) {
    if (!out.empty()) out += ": ";
    out += message;
  }
  return out + said.hints;
}

}  // namespace flashload
