// Every file of tests/data/malformed must produce the outcome expected.txt gives it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "flashload/header.h"
#include "support/status_matchers.h"

namespace flashload {
namespace {

struct Expectation {
  std::string file;
  std::string code;
  std::string substring;
};

// Not testing::ReadFile: the corpus has an empty file, which that helper memcpy()s from nullptr.
std::vector<std::byte> ReadCorpusFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(bytes.size());
  std::transform(bytes.begin(), bytes.end(), out.begin(), [](char c) { return std::byte(c); });
  return out;
}

void PrintTo(const Expectation& e, std::ostream* os) { *os << e.file; }

const std::string kCorpusDir = std::string(FL_TEST_DATA_DIR) + "/malformed";

std::vector<Expectation> LoadExpectations() {
  std::vector<Expectation> out;
  std::ifstream in(kCorpusDir + "/expected.txt");
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    Expectation e;
    std::getline(fields, e.file, '\t');
    std::getline(fields, e.code, '\t');
    std::getline(fields, e.substring);
    out.push_back(e);
  }
  return out;
}

TEST(MalformedCorpusTest, HasAtLeastFortyCasesAndEveryFileIsListed) {
  const std::vector<Expectation> expectations = LoadExpectations();
  EXPECT_GE(expectations.size(), 40u);
  std::set<std::string> listed;
  for (const Expectation& e : expectations) listed.insert(e.file);
  for (const auto& entry : std::filesystem::directory_iterator(kCorpusDir)) {
    if (entry.path().extension() != ".safetensors") continue;
    EXPECT_TRUE(listed.contains(entry.path().filename().string()))
        << entry.path() << " is not in expected.txt";
  }
}

class MalformedCorpusFileTest : public ::testing::TestWithParam<Expectation> {};

TEST_P(MalformedCorpusFileTest, ParsesToExpectedOutcome) {
  const Expectation& e = GetParam();
  const std::vector<std::byte> bytes = ReadCorpusFile(kCorpusDir + "/" + e.file);
  Result<Header> header = ParseHeaderFromBytes(bytes, e.file);
  EXPECT_EQ(StatusCodeName(header.status().code()), e.code) << header.status().ToString();
  EXPECT_THAT(std::string(header.status().message()), ::testing::HasSubstr(e.substring));
  if (!header.ok()) {
    // Every error names the file it is about.
    EXPECT_THAT(std::string(header.status().message()), ::testing::StartsWith(e.file + ":"));
  }
}

std::string CaseName(const ::testing::TestParamInfo<Expectation>& info) {
  std::string name = info.param.file.substr(0, info.param.file.find('.'));
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(Corpus, MalformedCorpusFileTest, ::testing::ValuesIn(LoadExpectations()),
                         CaseName);

}  // namespace
}  // namespace flashload
