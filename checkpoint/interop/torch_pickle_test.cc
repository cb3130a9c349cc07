// Hand-assembled pickles: what torch.save emits reads as the values it
// stands for, and what an attacker or a corrupt file emits is refused with
// the offset and the reason.
#include "checkpoint/interop/torch_pickle.h"

#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"

namespace interop {
namespace {

using Kind = PickleValue::Kind;
using std::string_literals::operator""s;

// Opcode builders.
std::string Proto() { return "\x80\x02"; }
std::string Global(absl::string_view module, absl::string_view name) {
  return absl::StrCat("c", module, "\n", name, "\n");
}
std::string Str(absl::string_view text) {
  std::string out = "X";
  for (int i = 0; i < 4; ++i) out.push_back((text.size() >> (8 * i)) & 0xff);
  return absl::StrCat(out, text);
}
std::string Int1(int value) {
  return std::string{'K', static_cast<char>(value)};
}
std::string Tuple(const std::string& items) {
  return absl::StrCat("(", items, "t");
}
std::string Stop() { return "."; }

// A float32 tensor of `shape`/`strides`/`offset` on storage `key` of
// `numel` elements: torch.save's exact opcode shape.
std::string Tensor(absl::string_view key, int numel, const std::string& shape,
                   const std::string& strides, int offset = 0,
                   absl::string_view storage = "FloatStorage") {
  return absl::StrCat(
      Global("torch._utils", "_rebuild_tensor_v2"), "(",
      Tuple(absl::StrCat(Str("storage"), Global("torch", storage), Str(key),
                         Str("cpu"), Int1(numel))),
      "Q", Int1(offset), Tuple(shape), Tuple(strides), "\x89",
      Global("collections", "OrderedDict"), ")R", "tR");
}

absl::StatusOr<TorchPickle> Unpickle(const std::string& pickle,
                                     PickleOptions options = {}) {
  return UnpickleTorch(pickle, options);
}

void ExpectRefused(const std::string& pickle, absl::string_view reason,
                   PickleOptions options = {}) {
  absl::StatusOr<TorchPickle> result = Unpickle(pickle, options);
  ASSERT_FALSE(result.ok()) << "accepted";
  EXPECT_NE(result.status().message().find(reason), std::string::npos)
      << result.status();
  EXPECT_NE(result.status().message().find("offset "), std::string::npos)
      << result.status();
}

TEST(TorchPickleTest, StateDictOfTwoTensorsSharingAStorage) {
  // OrderedDict([('w', t[6] as 2x3), ('v', t[3:] as 3)]) on one storage.
  const std::string pickle = absl::StrCat(
      Proto(), Global("collections", "OrderedDict"), ")R(", Str("w"),
      Tensor("0", 6, Int1(2) + Int1(3), Int1(3) + Int1(1)), Str("v"),
      Tensor("0", 6, Int1(3), Int1(1), 3), "u", Stop());
  absl::StatusOr<TorchPickle> result = Unpickle(pickle);
  ASSERT_TRUE(result.ok()) << result.status();
  const PickleValue& root = result->root();
  ASSERT_EQ(root.kind, Kind::kDict);
  ASSERT_EQ(root.entries.size(), 2u);
  ASSERT_EQ(result->storages().size(), 1u);
  EXPECT_EQ(result->storages()[0].bytes, 24u);
  const TorchTensor& w = result->tensors()[root.Get("w")->tensor];
  EXPECT_EQ(w.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_TRUE(w.contiguous());
  const TorchTensor& v = result->tensors()[root.Get("v")->tensor];
  EXPECT_EQ(v.offset, 3);
  EXPECT_EQ(v.storage, w.storage);
}

TEST(TorchPickleTest, ScalarsAndContainers) {
  // {'i': -2, 'big': 2**70, 'f': 0.5, 'b': True, 'n': None, 'l': [1],
  //  's': set([1, 2]), 'bytes': b'\xff'} with SETITEM for one key at a time
  const std::string big = "\x8a\x09" + std::string(8, '\0') + "\x40";
  const std::string pickle = absl::StrCat(
      Proto(), "}", Str("i"), "J\xfe\xff\xff\xff", "s", Str("big"), big, "s",
      Str("f"), "G\x3f\xe0", std::string(6, '\0'), "s", Str("b"), "\x88s",
      Str("n"), "Ns", Str("l"), "]", Int1(1), "as", Str("s"),
      Global("__builtin__", "set"), "(]", "(", Int1(1), Int1(2), "e", "tR", "s",
      Str("bytes"), Global("_codecs", "encode"), "(", Str("\xc3\xbf"),
      Str("latin1"), "tR", "s", Stop());
  absl::StatusOr<TorchPickle> result = Unpickle(pickle);
  ASSERT_TRUE(result.ok()) << result.status();
  const PickleValue& root = result->root();
  EXPECT_EQ(root.Get("i")->integer, -2);
  EXPECT_EQ(root.Get("big")->kind, Kind::kBigInt);
  EXPECT_EQ(root.Get("big")->text, "1180591620717411303424");
  EXPECT_EQ(root.Get("f")->number, 0.5);
  EXPECT_TRUE(root.Get("b")->boolean);
  EXPECT_EQ(root.Get("n")->kind, Kind::kNone);
  EXPECT_EQ(root.Get("l")->items.size(), 1u);
  EXPECT_EQ(root.Get("s")->kind, Kind::kSet);
  EXPECT_EQ(root.Get("s")->items.size(), 2u);
  EXPECT_EQ(root.Get("bytes")->text, "\xff");
}

TEST(TorchPickleTest, ProtocolFourOpcodes) {
  // FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL, BINGET of a memo entry.
  const std::string body =
      absl::StrCat("\x8c\x0b", "collections", "\x94", "\x8c\x0b", "OrderedDict",
                   "\x94", "\x93\x94)R\x94", "\x8c\x01k", "h\x00"s, "s.");
  std::string frame = "\x95";
  for (int i = 0; i < 8; ++i) frame.push_back(i == 0 ? body.size() : 0);
  absl::StatusOr<TorchPickle> result =
      Unpickle(absl::StrCat("\x80\x04", frame, body));
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->root().kind, Kind::kDict);
  EXPECT_EQ(result->root().Get("k")->kind, Kind::kString);  // memo 0
}

TEST(TorchPickleTest, GlobalsThatRunCodeAreRefusedEvenLeniently) {
  PickleOptions lenient;
  lenient.lenient = true;
  for (auto [module, name] : std::vector<std::pair<std::string, std::string>>{
           {"os", "system"},
           {"posix", "system"},
           {"builtins", "eval"},
           {"__builtin__", "exec"},
           {"subprocess", "Popen"},
           {"torch.serialization", "load"}}) {
    const std::string pickle =
        absl::StrCat(Proto(), Global(module, name),
                     Tuple(Str("touch /tmp/pwned")), "R", Stop());
    const std::string full = absl::StrCat(module, ".", name);
    ExpectRefused(pickle, absl::StrCat("global '", full, "' is refused"));
    ExpectRefused(pickle, absl::StrCat("global '", full, "' is refused"),
                  lenient);
  }
}

TEST(TorchPickleTest, UnknownGlobalsAreRefusedOrPlaceholders) {
  // A Lightning hyper-parameter: torch.nn.modules.loss.MSELoss() via
  // NEWOBJ, BUILD with its __dict__.
  const std::string pickle = absl::StrCat(
      Proto(), "}", Str("loss"), Global("torch.nn.modules.loss", "MSELoss"),
      ")\x81", "}", Str("reduction"), Str("mean"), "s", "b", "s", Stop());
  ExpectRefused(pickle,
                "offset 12: global 'torch.nn.modules.loss.MSELoss' is not "
                "allowed");
  PickleOptions lenient;
  lenient.lenient = true;
  absl::StatusOr<TorchPickle> result = Unpickle(pickle, lenient);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->root().Get("loss")->kind, Kind::kOpaque);
  EXPECT_EQ(result->placeholders(),
            std::vector<std::string>{"torch.nn.modules.loss.MSELoss"});
}

TEST(TorchPickleTest, MutationsOfTheWrongTypeAreRefused) {
  ExpectRefused(absl::StrCat(Proto(), "]", Str("k"), Str("v"), "s", Stop()),
                "SETITEM on a list, which is not a dict");
  ExpectRefused(absl::StrCat(Proto(), ")", Str("k"), Str("v"), "s", Stop()),
                "SETITEM on a tuple");
  ExpectRefused(absl::StrCat(Proto(), "}", Str("v"), "a", Stop()),
                "APPEND to a dict");
  ExpectRefused(absl::StrCat(Proto(), "]", "}b", Stop()), "BUILD on a list");
  ExpectRefused(absl::StrCat(Proto(), Str("x"), ")R", Stop()),
                "REDUCE on a str, which is not callable");
  ExpectRefused(absl::StrCat(Proto(), Tuple(Str("shell")), "Q", Stop()),
                "BINPERSID with an id other than");
}

TEST(TorchPickleTest, TensorsMustLieInsideTheirStorage) {
  auto state = [](const std::string& tensor) {
    return absl::StrCat(Proto(), "}", Str("t"), tensor, "s", Stop());
  };
  ASSERT_TRUE(
      Unpickle(state(Tensor("0", 6, Int1(2) + Int1(3), Int1(3) + Int1(1))))
          .ok());
  // 2x3 needs 6 elements; the storage has 5.
  ExpectRefused(state(Tensor("0", 5, Int1(2) + Int1(3), Int1(3) + Int1(1))),
                "reaches past the end of storage '0'");
  ExpectRefused(state(Tensor("0", 6, Int1(3), Int1(1), 4)),
                "reaches past the end of storage '0'");
  ExpectRefused(state(Tensor("0", 6, Int1(1), Int1(1), 7)),
                "starts past the end of storage '0'");
  // Strides that make elements alias (a 3x3 view of 5 elements).
  ExpectRefused(state(Tensor("0", 6, Int1(3) + Int1(3), Int1(1) + Int1(1))),
                "elements that overlap");
  // A stride-0 broadcast is how expand() saves: allowed.
  EXPECT_TRUE(
      Unpickle(state(Tensor("0", 3, Int1(4) + Int1(3), Int1(0) + Int1(1))))
          .ok());
  // One storage, two dtypes.
  ExpectRefused(absl::StrCat(Proto(), "(", Tensor("0", 6, Int1(6), Int1(1)),
                             Tensor("0", 6, Int1(6), Int1(1), 0, "LongStorage"),
                             "l", Stop()),
                "storage '0' is given 24 and 48 bytes");
}

TEST(TorchPickleTest, LimitsStopBombs) {
  PickleOptions options;
  options.limits.max_memo = 10;
  std::string memo = Proto() + "N";
  for (int i = 0; i < 11; ++i) memo += absl::StrCat("q", std::string(1, i));
  ExpectRefused(memo + Stop(), "the memo holds more than 10", options);

  options.limits.max_nesting = 50;
  std::string nest = Proto();
  for (int i = 0; i < 60; ++i) nest += "]";
  for (int i = 0; i < 59; ++i) nest += "a";
  ExpectRefused(nest + Stop(), "nest more than 50 deep", options);

  // l = []; l.append(l)
  ExpectRefused(absl::StrCat(Proto(),
                             "]q\x00h\x00"
                             "a"s,
                             Stop()),
                "a list contains itself");

  // Billion laughs: each level lists the previous one ten times.
  options = {};
  options.limits.max_expanded_values = 100'000;
  std::string laughs = absl::StrCat(Proto(), "]q\x00"s, "0");
  for (int level = 1; level < 10; ++level) {
    laughs += "(";
    for (int i = 0; i < 10; ++i) {
      laughs += absl::StrCat("h", std::string(1, level - 1));
    }
    laughs +=
        absl::StrCat("l", "q", std::string(1, level), level < 9 ? "0" : "");
  }
  ExpectRefused(laughs + Stop(), "expands to more than 100000", options);

  options = {};
  options.limits.max_marks = 5;
  ExpectRefused(Proto() + std::string(6, '(') + Stop(),
                "MARKs nest more than 5", options);
}

TEST(TorchPickleTest, MalformedStreamsAreRefused) {
  ExpectRefused(Proto() + "N", "ends without STOP");
  ExpectRefused(Proto() + "NN.", "values left on the stack");
  ExpectRefused(Proto() + "N.junk", "bytes after STOP");
  ExpectRefused(Proto() + "X\xff\xff\xff\x7f" + "abc.", "ends inside");
  ExpectRefused(Proto() + "h\x05.", "memo entry 5 was never set");
  ExpectRefused(Proto() + "X\x02\x00\x00\x00\xc3\x28."s, "not valid UTF-8");
  ExpectRefused(Proto() + "I12\n.", "text pickle");
  ExpectRefused(Proto() + "\x97.", "unsupported opcode 0x97");
  ExpectRefused("\x80\x06N.", "pickle protocol 6");
  ExpectRefused(Proto() + "0.", "pop from an empty stack");
}

// The fuzzer's seeds are data.pkl of files torch 1.13 and 2.11 wrote
// (pt_interop.py): each must read, strictly.
TEST(TorchPickleTest, RealTorchPicklesRead) {
  const std::string corpus =
      test_paths::Runfile("checkpoint/interop/testdata/pickle_corpus");
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(corpus)) {
    SCOPED_TRACE(entry.path().string());
    absl::StatusOr<TorchPickle> result =
        Unpickle(test_paths::ReadFile(entry.path().string()));
    EXPECT_TRUE(result.ok()) << result.status();
    ++files;
  }
  EXPECT_GE(files, 12);
}

}  // namespace
}  // namespace interop
