#include "format/pickle.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "support/status_matchers.h"

namespace flashload {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using namespace std::string_literals;

std::span<const std::byte> Bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

Result<PickleTree> Parse(const std::string& s, const PickleLimits& limits = {}) {
  return ParsePickle(Bytes(s), "archive/data.pkl", limits);
}

TEST(PickleTest, ReadsScalarsContainersAndMemo) {
  // {'a': [1, -2, 300, 70000, True, None, 1.5, b'xy'], 'b': (<memo 1 = the list>,)}
  std::string p =
      "\x80\x02}q\x00(X\x01\x00\x00\x00"
      "a]q\x01(K\x01J\xfe\xff\xff\xffM"s +
      "\x2c\x01"s + "J" + "\x70\x11\x01\x00"s + "\x88N"s + "G" +
      "\x3f\xf8\x00\x00\x00\x00\x00\x00"s + "C\x02xy"s + "eX" + "\x01\x00\x00\x00"s + "b" +
      "h\x01\x85u."s;
  FL_ASSERT_OK_AND_ASSIGN(PickleTree t, Parse(p));
  EXPECT_EQ(t.protocol, 2);
  EXPECT_EQ(t.end, p.size());
  const PickleNode& root = t.root_node();
  ASSERT_EQ(root.kind, PickleKind::kDict);
  ASSERT_EQ(root.items.size(), 4u);
  EXPECT_EQ(t.node(root.items[0]).text, "a");
  const PickleNode& list = t.node(root.items[1]);
  ASSERT_EQ(list.kind, PickleKind::kList);
  ASSERT_EQ(list.items.size(), 8u);
  EXPECT_EQ(t.node(list.items[0]).integer, 1);
  EXPECT_EQ(t.node(list.items[1]).integer, -2);
  EXPECT_EQ(t.node(list.items[2]).integer, 300);
  EXPECT_EQ(t.node(list.items[3]).integer, 70000);
  EXPECT_TRUE(t.node(list.items[4]).boolean);
  EXPECT_EQ(t.node(list.items[5]).kind, PickleKind::kNone);
  EXPECT_EQ(t.node(list.items[6]).real, 1.5);
  EXPECT_EQ(t.node(list.items[7]).text, "xy");
  const PickleNode& tuple = t.node(root.items[3]);
  ASSERT_EQ(tuple.kind, PickleKind::kTuple);
  EXPECT_EQ(tuple.items[0], root.items[1]);  // the memo shares, as Python's does
}

TEST(PickleTest, Long1OfAnySizeAndSign) {
  // LONG1 -1 (1 byte ff), LONG1 2^63 (9 bytes) in a tuple
  std::string p =
      "\x80\x02\x8a\x01\xff\x8a\x09"s + "\x00\x00\x00\x00\x00\x00\x00\x80\x00"s + "\x86.";
  FL_ASSERT_OK_AND_ASSIGN(PickleTree t, Parse(p));
  const PickleNode& tuple = t.root_node();
  EXPECT_EQ(t.node(tuple.items[0]).kind, PickleKind::kInt);
  EXPECT_EQ(t.node(tuple.items[0]).integer, -1);
  EXPECT_EQ(t.node(tuple.items[1]).kind, PickleKind::kBigInt);
}

TEST(PickleTest, OrderedDictReduceBecomesADictAndBuildIsRecorded) {
  // collections.OrderedDict() ; SETITEMS {'k': 1} ; BUILD {'_metadata': {}}
  std::string p = "\x80\x02\x63"s + "collections\nOrderedDict\n" +
                  ")R(X\x01\x00\x00\x00kK\x01u}X\x09\x00\x00\x00_metadata}sb."s;
  FL_ASSERT_OK_AND_ASSIGN(PickleTree t, Parse(p));
  ASSERT_EQ(t.root_node().kind, PickleKind::kDict);
  EXPECT_EQ(t.root_node().items.size(), 2u);
  EXPECT_NE(t.root_node().state, PickleNode::kNoState);
}

TEST(PickleTest, AllowedGlobalCallIsRecordedNotRun) {
  std::string p = "\x80\x02\x63"s + "torch._utils\n_rebuild_tensor_v2\n" + "K\x01\x85R."s;
  FL_ASSERT_OK_AND_ASSIGN(PickleTree t, Parse(p));
  const PickleNode& call = t.root_node();
  ASSERT_EQ(call.kind, PickleKind::kCall);
  EXPECT_EQ(t.node(call.items[0]).text, "torch._utils._rebuild_tensor_v2");
  EXPECT_EQ(t.node(call.items[1]).kind, PickleKind::kTuple);
}

TEST(PickleTest, RefusesOsSystemNamingItAndItsOffset) {
  // What pickle.dumps writes for a class whose __reduce__ returns (os.system, ('touch x',)).
  std::string p = "\x80\x02\x63"s + "posix\nsystem\n" + "q\x00X\x07\x00\x00\x00touch x\x85R."s;
  EXPECT_THAT(Parse(p),
              StatusIs(StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("refused global 'posix.system' at byte 2"),
                             HasSubstr("archive/data.pkl"), HasSubstr("never runs code"))));
}

TEST(PickleTest, RefusesStackGlobalOfBuiltinsEval) {
  std::string p = "\x80\x04\x8c\x08"s + "builtins" + "\x8c\x04" + "eval" + "\x93\x8c\x01x\x85R."s;
  EXPECT_THAT(Parse(p), StatusIs(StatusCode::kFailedPrecondition,
                                 HasSubstr("refused global 'builtins.eval' at byte 18")));
}

TEST(PickleTest, RefusesGetattrChainsAndLookalikes) {
  for (const char* name : {"builtins\ngetattr\n", "torch\nload\n", "torch._utils\nsystem\n",
                           "collections\nOrderedDict.__init__\n", "subprocess\nPopen\n",
                           "torch\nFloatStorage.from_file\n", "numpy\nload\n"}) {
    std::string p = "\x80\x02\x63"s + name + ")R.";
    EXPECT_THAT(Parse(p), StatusIs(StatusCode::kFailedPrecondition, HasSubstr("refused global")))
        << name;
  }
}

TEST(PickleTest, RefusesReduceOfAnythingButAGlobal) {
  // A string "called" with ().
  std::string p =
      "\x80\x02X\x04\x00\x00\x00"
      "evil)R."s;
  EXPECT_THAT(Parse(p),
              StatusIs(StatusCode::kFailedPrecondition, HasSubstr("refused REDUCE at byte 12")));
}

TEST(PickleTest, RefusesBuildOnAList) {
  std::string p = "\x80\x02]}b."s;
  EXPECT_THAT(Parse(p), StatusIs(StatusCode::kFailedPrecondition, HasSubstr("refused BUILD")));
}

TEST(PickleTest, RefusesInstanceOpcodes) {
  for (std::string op : {"\x81"s, "\x92"s, "o"s, "\x82\x01"s}) {
    std::string p = "\x80\x02(N)"s + op + ".";
    EXPECT_THAT(Parse(p), StatusIs(StatusCode::kFailedPrecondition, HasSubstr("refused opcode")));
  }
}

TEST(PickleTest, UnknownOpcodeNamesTheByteAndOffset) {
  std::string p = "\x80\x02N\xff."s;
  EXPECT_THAT(Parse(p), StatusIs(StatusCode::kDataLoss,
                                 AllOf(HasSubstr("unknown pickle opcode 0xff at byte 3"))));
}

TEST(PickleTest, MalformedInputIsDataLoss) {
  EXPECT_THAT(Parse(""), StatusIs(StatusCode::kDataLoss, HasSubstr("without its STOP")));
  EXPECT_THAT(Parse("\x80\x02X\xff\x00\x00\x00"
                    "ab"s),
              StatusIs(StatusCode::kDataLoss, HasSubstr("past the end")));
  EXPECT_THAT(Parse("."), StatusIs(StatusCode::kDataLoss, HasSubstr("pops an empty stack")));
  EXPECT_THAT(Parse("\x80\x02h\x05."s), StatusIs(StatusCode::kDataLoss, HasSubstr("memo entry 5")));
  EXPECT_THAT(Parse("\x80\x02NK\x01s."s),
              StatusIs(StatusCode::kDataLoss, HasSubstr("needs a value on the stack")));
  EXPECT_THAT(Parse("\x80\x02NK\x01K\x02s."s),
              StatusIs(StatusCode::kDataLoss, HasSubstr("not a dict")));
  EXPECT_THAT(Parse("\x80\x09N."s), StatusIs(StatusCode::kDataLoss, HasSubstr("protocol 9")));
  // Values below a MARK are out of reach, as in Python.
  EXPECT_THAT(Parse("\x80\x02N(\x85."s),
              StatusIs(StatusCode::kDataLoss, HasSubstr("needs 1 values")));
}

TEST(PickleTest, LimitsStopCraftedInput) {
  PickleLimits tight;
  tight.max_nodes = 10;
  std::string many = "\x80\x02(" + std::string(20, 'N') + "t.";
  EXPECT_THAT(Parse(many, tight), StatusIs(StatusCode::kResourceExhausted, HasSubstr("values")));
  tight = {};
  tight.max_stack = 5;
  EXPECT_THAT(Parse(many, tight), StatusIs(StatusCode::kResourceExhausted, HasSubstr("stack")));
  tight = {};
  tight.max_marks = 3;
  EXPECT_THAT(Parse("\x80\x02((((((N.", tight),
              StatusIs(StatusCode::kResourceExhausted, HasSubstr("marks")));
  tight = {};
  tight.max_memo = 2;
  EXPECT_THAT(Parse("\x80\x02N\x94\x94\x94."s, tight),
              StatusIs(StatusCode::kResourceExhausted, HasSubstr("memo")));
  tight = {};
  tight.max_value_bytes = 4;
  EXPECT_THAT(Parse("\x80\x02\x8c\x05hello."s, tight),
              StatusIs(StatusCode::kResourceExhausted, HasSubstr("bytes in one value")));
  // A length far past the input is refused before anything is allocated.
  EXPECT_THAT(Parse("\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\x7f."s),
              StatusIs(StatusCode::kResourceExhausted));
}

TEST(PickleTest, SelfReferenceBuildsACycleWithoutHanging) {
  // l = []; l.append(l)
  std::string p = "\x80\x02]q\x00h\x00\x61."s;
  FL_ASSERT_OK_AND_ASSIGN(PickleTree t, Parse(p));
  EXPECT_EQ(t.root_node().items[0], t.root);
}

TEST(PickleTest, StopsAtStopAndReportsBaseOffsets) {
  std::string p = "\x80\x02K\x07.\xff\xff"s;
  FL_ASSERT_OK_AND_ASSIGN(PickleTree t, ParsePickle(Bytes(p), "f", {}, 100));
  EXPECT_EQ(t.end, 5u);
  EXPECT_EQ(t.root_node().offset, 102u);
  EXPECT_THAT(ParsePickle(Bytes("\x80\x02\xfe"s), "f", {}, 100),
              StatusIs(StatusCode::kDataLoss, HasSubstr("at byte 102")));
}

TEST(PickleTest, Protocol0TextOpcodes) {
  // (lp0\nI1\naI01\naF0.5\naS'x'\naccollections\nOrderedDict\np1\n(tRp2\na.
  std::string p = "(lp0\nI12\naI01\naF0.5\naS'x'\naccollections\nOrderedDict\np1\n(tRp2\na.";
  FL_ASSERT_OK_AND_ASSIGN(PickleTree t, Parse(p));
  const PickleNode& l = t.root_node();
  ASSERT_EQ(l.items.size(), 5u);
  EXPECT_EQ(t.node(l.items[0]).integer, 12);
  EXPECT_TRUE(t.node(l.items[1]).boolean);
  EXPECT_EQ(t.node(l.items[2]).real, 0.5);
  EXPECT_EQ(t.node(l.items[3]).text, "x");
  EXPECT_EQ(t.node(l.items[4]).kind, PickleKind::kDict);
}

TEST(PickleTest, AllowListIsExactlyTorchNames) {
  for (std::string_view g : AllowedPickleGlobals()) {
    EXPECT_TRUE(g.starts_with("torch.") || g == "collections.OrderedDict") << g;
  }
  EXPECT_TRUE(IsAllowedPickleGlobal("torch.FloatStorage"));
  EXPECT_FALSE(IsAllowedPickleGlobal("torch.load"));
  EXPECT_FALSE(IsAllowedPickleGlobal("torch.FloatStorage "));
}

}  // namespace
}  // namespace flashload
