#include "io/pickle.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstring>
#include <optional>
#include <unordered_map>

#include "core/error.h"

namespace distillery {

const PickleValue* PickleValue::find(std::string_view key) const {
  const auto* dict = std::get_if<Dict>(&value);
  if (!dict) return nullptr;
  for (const auto& [k, v] : *dict)
    if (k == key) return v.get();
  return nullptr;
}

namespace {

using Node = std::shared_ptr<PickleValue>;

// The globals a data pickle may name, and what they become when called (REDUCE).
constexpr std::string_view kReconstruct = "numpy.core.multiarray._reconstruct", kReconstruct2 = "numpy._core.multiarray._reconstruct",
                           kNdarray = "numpy.ndarray", kDtype = "numpy.dtype", kCodecsEncode = "_codecs.encode",
                           kFromBuffer = "numpy.core.numeric._frombuffer", kFromBuffer2 = "numpy._core.numeric._frombuffer";

bool allowed_global(std::string_view name) {
  for (const auto allowed : {kReconstruct, kReconstruct2, kNdarray, kDtype, kCodecsEncode, kFromBuffer, kFromBuffer2})
    if (name == allowed) return true;
  return false;
}

// Bytes of one element of NumPy type `type` ("u1", "<f4", "|b1", ...), or nothing for types a
// data reader does not take (objects, strings, complex, datetimes).
std::optional<size_t> item_size(std::string_view type) {
  if (!type.empty() && std::string_view("<>|=").find(type[0]) != std::string_view::npos) type.remove_prefix(1);
  if (type.size() != 2 || std::string_view("biuf").find(type[0]) == std::string_view::npos) return std::nullopt;
  const size_t size = static_cast<size_t>(type[1] - '0');
  if (size != 1 && size != 2 && size != 4 && size != 8) return std::nullopt;
  return size;
}

class Parser {
 public:
  Parser(std::string_view bytes, const std::string& where) : bytes_(bytes), where_(where) {}
  // Containers may hold themselves (a list appended to itself): emptying every node breaks such cycles.
  ~Parser() {
    for (auto& node : arena_) node->value = PickleValue::None{};
  }

  PickleValue run() {
    while (true) {
      const auto op = static_cast<uint8_t>(take(1)[0]);
      if (op == '.') break;
      step(op);
    }
    DISTILLERY_CHECK(stack_.size() == 1 && marks_.empty(), fail("the pickle ends with a malformed stack"));
    copy_budget_ = 4 * bytes_.size() + 1024;
    return copy(*stack_.back(), 0);
  }

 private:
  Error fail(const std::string& what) const { return Error(fmt::format("unreadable pickle: {}", what)).file(where_).got(fmt::format("at byte {}", at_)); }

  std::string_view take(size_t n) {
    DISTILLERY_CHECK(n <= bytes_.size() - at_, fail("the file ends inside an opcode"));
    const auto out = bytes_.substr(at_, n);
    at_ += n;
    return out;
  }
  uint64_t little_endian(size_t n) {
    const auto b = take(n);
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= uint64_t{static_cast<uint8_t>(b[i])} << (8 * i);
    return v;
  }
  std::string_view line() {
    const size_t end = bytes_.find('\n', at_);
    DISTILLERY_CHECK(end != std::string_view::npos, fail("a text argument has no end of line"));
    const auto out = bytes_.substr(at_, end - at_);
    at_ = end + 1;
    return out;
  }
  std::string_view sized(uint64_t n) {
    DISTILLERY_CHECK(n <= bytes_.size() - at_, fail("a string runs past the end of the file"));
    return take(static_cast<size_t>(n));
  }

  Node make(decltype(PickleValue::value) value) {
    auto node = std::make_shared<PickleValue>(PickleValue{std::move(value)});
    arena_.push_back(node);
    return node;
  }
  void push(decltype(PickleValue::value) value) { stack_.push_back(make(std::move(value))); }
  Node pop() {
    DISTILLERY_CHECK(stack_.size() > (marks_.empty() ? 0 : marks_.back()), fail("an opcode takes more values than the stack holds"));
    auto node = stack_.back();
    stack_.pop_back();
    return node;
  }
  Node& top() {
    DISTILLERY_CHECK(stack_.size() > (marks_.empty() ? 0 : marks_.back()), fail("an opcode needs a value on an empty stack"));
    return stack_.back();
  }
  std::vector<Node> pop_to_mark() {
    DISTILLERY_CHECK(!marks_.empty(), fail("an opcode needs a mark that was never set"));
    std::vector<Node> items(stack_.begin() + static_cast<std::ptrdiff_t>(marks_.back()), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }
  int64_t text_int(std::string_view text) {
    if (!text.empty() && text.back() == 'L') text.remove_suffix(1);
    int64_t value = 0;
    const bool negative = !text.empty() && text[0] == '-';
    if (negative) text.remove_prefix(1);
    DISTILLERY_CHECK(!text.empty() && text.size() <= 18, fail("an integer in text is empty or too long"));
    for (const char c : text) {
      DISTILLERY_CHECK(c >= '0' && c <= '9', fail("an integer in text has a character that is not a digit"));
      value = value * 10 + (c - '0');
    }
    return negative ? -value : value;
  }
  const std::string& text_of(const PickleValue& node, const char* what) {
    const auto* s = std::get_if<std::string>(&node.value);
    DISTILLERY_CHECK(s, fail(fmt::format("{} is not a string", what)));
    return *s;
  }
  void memo_put(uint64_t index) { memo_[index] = top(); }
  void memo_get(uint64_t index) {
    const auto it = memo_.find(index);
    DISTILLERY_CHECK(it != memo_.end(), fail(fmt::format("memo entry {} is read before it is written", index)));
    stack_.push_back(it->second);
  }
  void global(std::string name) {
    DISTILLERY_CHECK(allowed_global(name), fail(fmt::format("it names '{}', which a data reader does not call", name)).hint(
                                               "only NumPy arrays and plain Python values are read; the file may run code when unpickled"));
    push(PickleValue::Global{std::move(name)});
  }
  void set_items(Node& dict_node, const std::vector<Node>& items) {
    auto* dict = std::get_if<PickleValue::Dict>(&dict_node->value);
    DISTILLERY_CHECK(dict && items.size() % 2 == 0, fail("items are set on something that is not a dict"));
    for (size_t i = 0; i < items.size(); i += 2) dict->emplace_back(text_of(*items[i], "a dict key"), items[i + 1]);
  }
  void append(Node& list_node, const std::vector<Node>& items) {
    auto* list = std::get_if<PickleList>(&list_node->value);
    DISTILLERY_CHECK(list, fail("items are appended to something that is not a list"));
    list->insert(list->end(), items.begin(), items.end());
  }
  const PickleList& tuple_items(const Node& node, const char* what) {
    const auto* tuple = std::get_if<PickleValue::Tuple>(&node->value);
    DISTILLERY_CHECK(tuple, fail(fmt::format("{} is not a tuple", what)));
    return tuple->items;
  }
  std::vector<int64_t> shape_of(const PickleValue& value) {
    const auto* tuple = std::get_if<PickleValue::Tuple>(&value.value);
    DISTILLERY_CHECK(tuple, fail("an array's shape is not a tuple"));
    std::vector<int64_t> shape;
    for (const auto& d : tuple->items) {
      const auto* n = std::get_if<int64_t>(&d->value);
      DISTILLERY_CHECK(n && *n >= 0, fail("an array's shape holds something other than a size"));
      shape.push_back(*n);
    }
    return shape;
  }
  // Checks that `data` holds exactly the elements `shape` and `type` declare.
  void fill_array(PickleArray& array, std::vector<int64_t> shape, std::string type, std::string data) {
    const auto size = item_size(type);
    DISTILLERY_CHECK(size.has_value(), fail(fmt::format("an array of NumPy type '{}'", type)).expected("booleans, integers or floats"));
    uint64_t bytes = *size;
    for (const auto d : shape) {
      DISTILLERY_CHECK(d == 0 || bytes <= bytes_.size() / static_cast<uint64_t>(d), fail("an array's shape is larger than the file"));
      bytes *= static_cast<uint64_t>(d);
    }
    DISTILLERY_CHECK(bytes == data.size(), fail(fmt::format("an array of shape [{}] and type {} holds {} bytes", fmt::join(shape, ", "), type, data.size()))
                                               .expected(fmt::format("{} bytes", bytes)));
    array = {std::move(shape), std::move(type), std::move(data)};
  }
  std::string dtype_of(const PickleValue& node) {
    const auto* dtype = std::get_if<PickleValue::Dtype>(&node.value);
    DISTILLERY_CHECK(dtype, fail("an array's type is not a NumPy dtype"));
    return dtype->type;
  }

  void reduce() {
    const auto args = pop();
    const auto callable = pop();
    const auto* global = std::get_if<PickleValue::Global>(&callable->value);
    DISTILLERY_CHECK(global, fail("something other than an allowed global is called"));
    const auto& items = tuple_items(args, "the arguments of a call");
    if (global->name == kReconstruct || global->name == kReconstruct2) {
      DISTILLERY_CHECK(!items.empty() && std::holds_alternative<PickleValue::Global>(items[0]->value) &&
                           std::get<PickleValue::Global>(items[0]->value).name == kNdarray,
                       fail("_reconstruct is called for something other than numpy.ndarray"));
      push(PickleArray{});  // filled by BUILD
    } else if (global->name == kDtype) {
      DISTILLERY_CHECK(!items.empty(), fail("numpy.dtype is called without a type"));
      push(PickleValue::Dtype{text_of(*items[0], "a dtype's type")});
    } else if (global->name == kCodecsEncode) {
      // How Python 3 writes bytes at protocol 2: the text of their latin-1 decoding, encoded again.
      DISTILLERY_CHECK(items.size() == 2 && text_of(*items[1], "an encoding") == "latin1",
                       fail("_codecs.encode is called with arguments other than (text, 'latin1')"));
      const auto& utf8 = text_of(*items[0], "the text to encode");
      std::string latin1;
      for (size_t i = 0; i < utf8.size(); ++i) {
        const auto c = static_cast<uint8_t>(utf8[i]);
        if (c < 0x80) {
          latin1 += static_cast<char>(c);
        } else {
          DISTILLERY_CHECK((c == 0xc2 || c == 0xc3) && i + 1 < utf8.size() && (static_cast<uint8_t>(utf8[i + 1]) & 0xc0) == 0x80,
                           fail("latin-1 text holds a character beyond U+00FF"));
          latin1 += static_cast<char>(((c & 0x03) << 6) | (static_cast<uint8_t>(utf8[++i]) & 0x3f));
        }
      }
      push(std::move(latin1));
    } else if (global->name == kFromBuffer || global->name == kFromBuffer2) {
      DISTILLERY_CHECK(items.size() == 4, fail("_frombuffer is called with other than (buffer, dtype, shape, order)"));
      const auto* order = std::get_if<std::string>(&items[3]->value);
      DISTILLERY_CHECK(order && *order == "C", fail("an array in Fortran order").expected("C order"));
      PickleArray array;
      fill_array(array, shape_of(*items[2]), dtype_of(*items[1]),
                 text_of(*items[0], "an array's buffer"));
      push(std::move(array));
    } else {
      throw fail(fmt::format("'{}' is called, which is a type, not a function that builds data", global->name));
    }
  }

  void build() {
    const auto state = pop();
    auto& target = top();
    const auto& items = tuple_items(state, "the state of an object");
    if (auto* dtype = std::get_if<PickleValue::Dtype>(&target->value)) {
      DISTILLERY_CHECK(items.size() >= 2, fail("a dtype's state is too short"));
      const auto& order = text_of(*items[1], "a dtype's byte order");
      DISTILLERY_CHECK(order == "<" || order == ">" || order == "|" || order == "=", fail("a dtype's byte order is not one of < > | ="));
      if (order != "|") dtype->type = order + dtype->type;
      return;
    }
    auto* array = std::get_if<PickleArray>(&target->value);
    DISTILLERY_CHECK(array && array->shape.empty() && array->dtype.empty(), fail("state is set on something other than a new array or dtype"));
    DISTILLERY_CHECK(items.size() == 5, fail("an array's state is not (version, shape, dtype, fortran, data)"));
    const auto* fortran = std::get_if<bool>(&items[3]->value);
    const auto* fortran_int = std::get_if<int64_t>(&items[3]->value);
    DISTILLERY_CHECK((fortran && !*fortran) || (fortran_int && *fortran_int == 0), fail("an array in Fortran order").expected("C order"));
    fill_array(*array, shape_of(*items[1]), dtype_of(*items[2]),
               text_of(*items[4], "an array's data"));
  }

  void step(uint8_t op) {
    switch (op) {
      case 0x80: take(1); break;                 // PROTO
      case 0x95: take(8); break;                 // FRAME
      case '(': marks_.push_back(stack_.size()); break;
      case 'N': push(PickleValue::None{}); break;
      case 0x88: push(true); break;
      case 0x89: push(false); break;
      case 'J': push(static_cast<int64_t>(static_cast<int32_t>(little_endian(4)))); break;
      case 'K': push(static_cast<int64_t>(little_endian(1))); break;
      case 'M': push(static_cast<int64_t>(little_endian(2))); break;
      case 'I': {
        const auto text = line();
        if (text == "00" || text == "01") push(text == "01");
        else push(text_int(text));
        break;
      }
      case 'L': push(text_int(line())); break;
      case 0x8a: {                               // LONG1: little-endian two's complement
        const size_t n = static_cast<size_t>(little_endian(1));
        DISTILLERY_CHECK(n <= 8, fail("an integer wider than 64 bits"));
        uint64_t v = little_endian(n);
        if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t{0} << (8 * n);
        push(static_cast<int64_t>(v));
        break;
      }
      case 'G': {
        const auto b = take(8);
        uint64_t bits = 0;
        for (size_t i = 0; i < 8; ++i) bits = bits << 8 | static_cast<uint8_t>(b[i]);
        double value;
        std::memcpy(&value, &bits, sizeof value);
        push(value);
        break;
      }
      case 'U': case 'C': case 0x8c: push(std::string(sized(little_endian(1)))); break;
      case 'T': case 'B': case 'X': push(std::string(sized(little_endian(4)))); break;
      case 0x8d: case 0x8e: case 0x96: push(std::string(sized(little_endian(8)))); break;
      case ']': push(PickleList{}); break;
      case 'l': {
        auto items = pop_to_mark();
        push(PickleList(items.begin(), items.end()));
        break;
      }
      case 'a': {
        auto item = pop();
        append(top(), {item});
        break;
      }
      case 'e': {
        auto items = pop_to_mark();
        append(top(), items);
        break;
      }
      case ')': push(PickleValue::Tuple{}); break;
      case 't': {
        auto items = pop_to_mark();
        push(PickleValue::Tuple{PickleList(items.begin(), items.end())});
        break;
      }
      case 0x85: case 0x86: case 0x87: {
        std::vector<Node> items(static_cast<size_t>(op - 0x84));
        for (auto it = items.rbegin(); it != items.rend(); ++it) *it = pop();
        push(PickleValue::Tuple{PickleList(items.begin(), items.end())});
        break;
      }
      case '}': push(PickleValue::Dict{}); break;
      case 'd': {
        auto items = pop_to_mark();
        push(PickleValue::Dict{});
        set_items(top(), items);
        break;
      }
      case 's': {
        auto value = pop();
        auto key = pop();
        set_items(top(), {key, value});
        break;
      }
      case 'u': {
        auto items = pop_to_mark();
        set_items(top(), items);
        break;
      }
      case 'q': memo_put(little_endian(1)); break;
      case 'r': memo_put(little_endian(4)); break;
      case 'p': memo_put(static_cast<uint64_t>(text_int(line()))); break;
      case 0x94: memo_put(memo_.size()); break;  // MEMOIZE
      case 'h': memo_get(little_endian(1)); break;
      case 'j': memo_get(little_endian(4)); break;
      case 'g': memo_get(static_cast<uint64_t>(text_int(line()))); break;
      case 'c': {
        const std::string module(line());
        global(module + "." + std::string(line()));
        break;
      }
      case 0x93: {                               // STACK_GLOBAL
        const auto name = pop();
        const auto module = pop();
        global(text_of(*module, "a global's module") + "." + text_of(*name, "a global's name"));
        break;
      }
      case 'R': reduce(); break;
      case 'b': build(); break;
      case '0': pop(); break;
      case '1': pop_to_mark(); break;
      case '2': {
        auto copy = top();
        stack_.push_back(std::move(copy));
        break;
      }
      default:
        throw fail(fmt::format("opcode 0x{:02x} is not one a data pickle uses", op))
            .hint("only NumPy arrays and plain Python values are read (no objects, no persistent ids)");
    }
  }

  // The finished value as a tree that owns its nodes. Shared nodes are copied for every
  // reference, within a budget proportional to the input, so a pickle cannot expand without bound.
  PickleValue copy(const PickleValue& node, int depth) {
    DISTILLERY_CHECK(depth < 256, fail("values nested more than 256 deep (or a container that holds itself)"));
    const auto charge = [&](size_t cost) {
      DISTILLERY_CHECK(cost <= copy_budget_, fail("its values expand to far more than the file's size"));
      copy_budget_ -= cost;
    };
    charge(1);
    const auto copy_list = [&](const PickleList& items) {
      PickleList out;
      for (const auto& item : items) out.push_back(std::make_shared<const PickleValue>(copy(*item, depth + 1)));
      return out;
    };
    if (const auto* list = std::get_if<PickleList>(&node.value)) return {copy_list(*list)};
    if (const auto* tuple = std::get_if<PickleValue::Tuple>(&node.value)) return {PickleValue::Tuple{copy_list(tuple->items)}};
    if (const auto* dict = std::get_if<PickleValue::Dict>(&node.value)) {
      PickleValue::Dict out;
      for (const auto& [key, value] : *dict) {
        charge(key.size());
        out.emplace_back(key, std::make_shared<const PickleValue>(copy(*value, depth + 1)));
      }
      return {std::move(out)};
    }
    if (const auto* s = std::get_if<std::string>(&node.value)) charge(s->size());
    if (const auto* a = std::get_if<PickleArray>(&node.value)) {
      DISTILLERY_CHECK(!a->dtype.empty(), fail("an array is made but never given its shape, type and data"));
      charge(a->data.size());
    }
    return node;
  }

  std::string_view bytes_;
  const std::string& where_;
  size_t at_ = 0;
  std::vector<Node> stack_, arena_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Node> memo_;
  size_t copy_budget_ = 0;
};

}  // namespace

PickleValue parse_pickle(std::string_view bytes, const std::string& where) { return Parser(bytes, where).run(); }

}  // namespace distillery
