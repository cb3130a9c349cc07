#include "runner/data/npy.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tools/base/endian.h"
#include "tools/base/files.h"

namespace runner {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;
// numpy itself refuses headers over 10000 bytes by default; a little more
// room costs nothing and still bounds the parser's work.
constexpr uint32_t kMaxHeaderSize = 1 << 20;
// No tensor of ours has more dimensions; more is a corrupt header.
constexpr size_t kMaxRank = 32;

absl::Status Malformed(absl::string_view name, absl::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat(name, ": not a valid .npy file: ", problem));
}

// A cursor over the header's Python dict literal, e.g.
// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
class HeaderParser {
 public:
  explicit HeaderParser(absl::string_view text) : text_(text) {}

  void SkipSpaces() {
    while (pos_ < text_.size() && absl::ascii_isspace(text_[pos_])) ++pos_;
  }
  bool Consume(char c) {
    SkipSpaces();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool Peek(char c) {
    SkipSpaces();
    return pos_ < text_.size() && text_[pos_] == c;
  }
  std::optional<std::string> String() {
    SkipSpaces();
    if (pos_ >= text_.size() || (text_[pos_] != '\'' && text_[pos_] != '"')) {
      return std::nullopt;
    }
    char quote = text_[pos_++];
    size_t end = text_.find(quote, pos_);
    if (end == absl::string_view::npos) return std::nullopt;
    std::string value(text_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return value;
  }
  std::optional<bool> Bool() {
    SkipSpaces();
    for (auto [word, value] :
         {std::pair<absl::string_view, bool>{"True", true}, {"False", false}}) {
      if (text_.substr(pos_, word.size()) == word) {
        pos_ += word.size();
        return value;
      }
    }
    return std::nullopt;
  }
  std::optional<int64_t> Integer() {
    SkipSpaces();
    size_t start = pos_;
    while (pos_ < text_.size() && absl::ascii_isdigit(text_[pos_])) ++pos_;
    // Python 2 era writers appended L to longs.
    size_t end = pos_;
    if (pos_ < text_.size() && text_[pos_] == 'L') ++pos_;
    int64_t value;
    if (end == start ||
        !absl::SimpleAtoi(text_.substr(start, end - start), &value)) {
      return std::nullopt;
    }
    return value;
  }
  bool AtEnd() {
    SkipSpaces();
    return pos_ == text_.size();
  }

 private:
  absl::string_view text_;
  size_t pos_ = 0;
};

struct Header {
  std::optional<std::string> descr;
  std::optional<bool> fortran_order;
  std::optional<std::vector<int64_t>> shape;
};

absl::StatusOr<Header> ParseHeader(absl::string_view text,
                                   absl::string_view name) {
  HeaderParser parser(text);
  Header header;
  if (!parser.Consume('{')) return Malformed(name, "header is not a dict");
  while (!parser.Consume('}')) {
    std::optional<std::string> key = parser.String();
    if (!key.has_value() || !parser.Consume(':')) {
      return Malformed(name, "header dict key expected");
    }
    if (*key == "descr") {
      header.descr = parser.String();
      if (!header.descr.has_value()) {
        return Malformed(name, "'descr' is not a string");
      }
    } else if (*key == "fortran_order") {
      header.fortran_order = parser.Bool();
      if (!header.fortran_order.has_value()) {
        return Malformed(name, "'fortran_order' is not True or False");
      }
    } else if (*key == "shape") {
      if (!parser.Consume('('))
        return Malformed(name, "'shape' is not a tuple");
      std::vector<int64_t> shape;
      while (!parser.Consume(')')) {
        std::optional<int64_t> dim = parser.Integer();
        if (!dim.has_value()) {
          return Malformed(name, "'shape' holds a non-integer dimension");
        }
        if (shape.size() == kMaxRank) {
          return Malformed(name, absl::StrCat("'shape' has more than ",
                                              kMaxRank, " dimensions"));
        }
        shape.push_back(*dim);
        if (!parser.Consume(',') && !parser.Peek(')')) {
          return Malformed(name, "'shape' tuple is malformed");
        }
      }
      header.shape = std::move(shape);
    } else {
      return Malformed(name,
                       absl::StrCat("unexpected header key '", *key, "'"));
    }
    if (!parser.Consume(',') && !parser.Peek('}')) {
      return Malformed(name, "header dict is malformed");
    }
  }
  if (!parser.AtEnd()) return Malformed(name, "trailing text after header");
  if (!header.descr || !header.fortran_order || !header.shape) {
    return Malformed(name,
                     "header lacks one of 'descr', 'fortran_order', 'shape'");
  }
  return header;
}

std::string ShapeString(absl::Span<const int64_t> shape) {
  return absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

std::string ErrnoMessage(int error) { return std::strerror(error); }

}  // namespace

int64_t NpyElementSize(NpyDtype dtype) {
  return dtype == NpyDtype::kFloat32 ? 4 : 1;
}

const char* NpyDtypeName(NpyDtype dtype) {
  return dtype == NpyDtype::kFloat32 ? "float32" : "uint8";
}

int64_t NpyArray::num_elements() const {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return count;
}

absl::StatusOr<NpyArray> ParseNpy(absl::string_view bytes,
                                  absl::string_view name) {
  if (bytes.size() < kMagicSize + 2 ||
      bytes.substr(0, kMagicSize) != absl::string_view(kMagic, kMagicSize)) {
    return Malformed(name, "missing \\x93NUMPY magic");
  }
  const auto major = static_cast<uint8_t>(bytes[kMagicSize]);
  const auto minor = static_cast<uint8_t>(bytes[kMagicSize + 1]);
  size_t length_size;
  if (major == 1 && minor == 0) {
    length_size = 2;
  } else if ((major == 2 || major == 3) && minor == 0) {
    length_size = 4;
  } else {
    return Malformed(
        name, absl::StrCat("unsupported format version ", major, ".", minor));
  }
  size_t prefix = kMagicSize + 2 + length_size;
  if (bytes.size() < prefix) return Malformed(name, "truncated header");
  const uint32_t header_size = static_cast<uint32_t>(
      base::GetLittleEndian(bytes.data() + kMagicSize + 2, length_size));
  if (header_size > kMaxHeaderSize) {
    return Malformed(name, absl::StrCat("header of ", header_size,
                                        " bytes is absurdly large"));
  }
  if (bytes.size() - prefix < header_size) {
    return Malformed(name, "truncated header");
  }
  absl::StatusOr<Header> header =
      ParseHeader(bytes.substr(prefix, header_size), name);
  if (!header.ok()) return header.status();

  NpyArray array;
  if (*header->descr == "<f4") {
    array.dtype = NpyDtype::kFloat32;
  } else if (*header->descr == "|u1" || *header->descr == "<u1" ||
             *header->descr == "u1") {
    array.dtype = NpyDtype::kUint8;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": unsupported dtype '", *header->descr,
                     "' (supported: '<f4' float32, '|u1' uint8)"));
  }
  if (*header->fortran_order) {
    return absl::InvalidArgumentError(
        absl::StrCat(name,
                     ": Fortran-order arrays are not supported (save a C-order "
                     "array, e.g. numpy.ascontiguousarray)"));
  }
  array.shape = std::move(*header->shape);

  const uint64_t available = bytes.size() - prefix - header_size;
  uint64_t expected = static_cast<uint64_t>(NpyElementSize(array.dtype));
  for (int64_t dim : array.shape) {
    if (dim != 0 && expected > std::numeric_limits<uint64_t>::max() /
                                   static_cast<uint64_t>(dim)) {
      return Malformed(name, absl::StrCat("shape ", ShapeString(array.shape),
                                          " is absurdly large"));
    }
    expected *= static_cast<uint64_t>(dim);
  }
  if (expected != available) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": shape ", ShapeString(array.shape), " of ",
        NpyDtypeName(array.dtype), " needs ", expected, " data bytes but ",
        available, " are present", expected > available ? " (truncated)" : ""));
  }
  array.data = std::string(bytes.substr(prefix + header_size));
  return array;
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int error = errno;
    if (error == ENOENT) {
      return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    }
    return absl::PermissionDeniedError(
        absl::StrCat(path, ": cannot open: ", ErrnoMessage(error)));
  }
  struct stat info;
  if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a regular file"));
  }
  std::string contents(static_cast<size_t>(info.st_size), '\0');
  size_t done = 0;
  while (done < contents.size()) {
    ssize_t got = read(fd, contents.data() + done, contents.size() - done);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      int error = errno;
      close(fd);
      return absl::DataLossError(
          absl::StrCat(path, ": read failed: ", ErrnoMessage(error)));
    }
    if (got == 0) break;
    done += static_cast<size_t>(got);
  }
  close(fd);
  contents.resize(done);
  return contents;
}

absl::StatusOr<NpyArray> ReadNpy(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFileToString(path);
  if (!bytes.ok()) return bytes.status();
  return ParseNpy(*bytes, path);
}

absl::StatusOr<std::string> SerializeNpy(NpyDtype dtype,
                                         absl::Span<const int64_t> shape,
                                         absl::string_view data) {
  uint64_t expected = static_cast<uint64_t>(NpyElementSize(dtype));
  for (int64_t dim : shape) {
    if (dim < 0) {
      return absl::InvalidArgumentError("npy: negative dimension in shape");
    }
    expected *= static_cast<uint64_t>(dim);
  }
  if (expected != data.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("npy: shape ", ShapeString(shape), " needs ", expected,
                     " bytes, got ", data.size()));
  }
  // One-element tuples keep their comma, as Python writes them: (5,).
  std::string shape_text = shape.size() == 1 ? absl::StrCat("(", shape[0], ",)")
                                             : ShapeString(shape);
  std::string dict =
      absl::StrCat("{'descr': '", dtype == NpyDtype::kFloat32 ? "<f4" : "|u1",
                   "', 'fortran_order': False, 'shape': ", shape_text, ", }");
  // Pad with spaces and a final newline so the data starts 64-byte aligned.
  size_t length_size = 2;
  uint8_t major = 1;
  if (kMagicSize + 2 + 2 + dict.size() + 1 > 65535) {
    length_size = 4;
    major = 2;
  }
  size_t unpadded = kMagicSize + 2 + length_size + dict.size() + 1;
  size_t padding = (64 - unpadded % 64) % 64;
  std::string header = dict + std::string(padding, ' ') + "\n";
  std::string out(kMagic, kMagicSize);
  out.push_back(static_cast<char>(major));
  out.push_back(0);
  base::AppendLittleEndian(header.size(), length_size, &out);
  out += header;
  out.append(data.data(), data.size());
  return out;
}

absl::Status WriteNpy(const std::string& path, NpyDtype dtype,
                      absl::Span<const int64_t> shape, absl::string_view data) {
  absl::StatusOr<std::string> bytes = SerializeNpy(dtype, shape, data);
  if (!bytes.ok()) {
    return absl::Status(bytes.status().code(),
                        absl::StrCat(path, ": ", bytes.status().message()));
  }
  return base::WriteFileAtomically(path, *bytes);
}

}  // namespace runner
