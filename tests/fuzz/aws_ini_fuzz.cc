// libFuzzer target for the AWS shared config / credentials INI parser: any input either fails with
// an error naming the file and a line, or parses into sections whose re-serialization parses back
// to the same sections.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "io/aws_config.h"

namespace {

void Check(bool condition) {
  if (!condition) std::abort();
}

std::string Serialize(const flashload::AwsIniFile& ini) {
  std::string out;
  for (const auto& [section, keys] : ini.sections) {
    out += "[" + section + "]\n";
    for (const auto& [key, value] : keys) out += key + " = " + value + "\n";
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  flashload::Result<flashload::AwsIniFile> ini = flashload::ParseAwsIni(text, "fuzz.ini");
  if (!ini.ok()) {
    Check(ini.status().code() == flashload::StatusCode::kInvalidArgument);
    Check(ini.status().message().substr(0, 9) == "fuzz.ini:");
    return 0;
  }
  for (const auto& [section, keys] : ini->sections) {
    Check(!section.empty());
    Check(section.find('\n') == std::string::npos);
    for (const auto& [key, value] : keys) {
      Check(!key.empty() && key.find_first_of("=:\n") == std::string::npos);
      Check(value.find('\n') == std::string::npos);
      Check(ini->Find(section, key) == &value);
    }
  }
  const std::string again_text = Serialize(*ini);
  if (again_text.size() <= flashload::kMaxAwsIniBytes) {
    flashload::Result<flashload::AwsIniFile> again = flashload::ParseAwsIni(again_text, "again");
    Check(again.ok() && again->sections == ini->sections);
  }
  return 0;
}
