// Stream format of the entropy coders (see entropy.h): header, table and lane directory, shared by
// the Huffman and ANS payload coders. Every reader here is bounded: a field that runs past the end,
// a value out of range or a sum that does not add up returns a message naming the defect.
#include <algorithm>

#include "entropy_impl.h"

namespace wsq {
namespace entropy {
namespace detail {
namespace {

constexpr int kTagVersion = 0x10;

// ---- bit-level table coding, LSB first

struct BitWriter {
  std::vector<uint8_t> *out;
  uint64_t acc = 0;
  int nb = 0;
  void put(uint64_t v, int n) { // n <= 32
    acc |= (v & ((uint64_t(1) << n) - 1)) << nb;
    nb += n;
    while (nb >= 8) {
      out->push_back(static_cast<uint8_t>(acc));
      acc >>= 8;
      nb -= 8;
    }
  }
  void flush() {
    if (nb)
      out->push_back(static_cast<uint8_t>(acc));
    acc = 0;
    nb = 0;
  }
};

struct BitReader {
  const uint8_t *p;
  int64_t nbits;
  int64_t pos = 0;
  bool get(int n, uint64_t *v) { // n <= 56
    if (n > nbits - pos)
      return false;
    uint64_t r = 0;
    for (int i = 0; i < n; ++i, ++pos)
      r |= uint64_t((p[pos >> 3] >> (pos & 7)) & 1) << i;
    *v = r;
    return true;
  }
};

// Exp-Golomb of order k: z zeros, a one, then the low z+k bits of v + 2^k.
void put_eg(BitWriter &bw, uint64_t v, int k) {
  uint64_t w = v + (uint64_t(1) << k);
  int nb = 64 - __builtin_clzll(w);
  int z = nb - 1 - k;
  bw.put(0, z); // z <= 19: table values (runs, zigzag deltas) stay below 2^19
  bw.put(1, 1);
  for (int done = 0; done < nb - 1; done += 32) {
    int n = std::min(32, nb - 1 - done);
    bw.put(w >> done, n);
  }
}

// Returns false on truncation or a value of more than 40 bits (no table value comes close).
bool get_eg(BitReader &br, int k, uint64_t *v) {
  int z = 0;
  for (;;) {
    uint64_t b;
    if (!br.get(1, &b))
      return false;
    if (b)
      break;
    if (++z + k > 40)
      return false;
  }
  uint64_t rest;
  if (!br.get(z + k, &rest))
    return false;
  *v = ((uint64_t(1) << (z + k)) | rest) - (uint64_t(1) << k);
  return true;
}

// LOCO-I style adaptive order: k tracks the running mean of recent values.
struct AdaptiveK {
  uint64_t a, c = 1;
  explicit AdaptiveK(uint64_t a0) : a(a0) {}
  int k() const {
    int k = 0;
    while ((c << k) < a && k < 30)
      ++k;
    return k;
  }
  void update(uint64_t v) {
    a += v;
    if (++c == 16) {
      a = (a + 1) >> 1;
      c = 8;
    }
  }
};

inline uint64_t zigzag(int64_t d) { return d >= 0 ? uint64_t(d) << 1 : (uint64_t(-d) << 1) - 1; }
inline int64_t unzigzag(uint64_t z) { return (z & 1) ? -int64_t((z + 1) >> 1) : int64_t(z >> 1); }

uint64_t initial_a(int coder) { return coder == kAns ? 64 : 4; }

// Table: used set as alternating runs, then the values of the used symbols (when >= 2 are used).
void write_table(std::vector<uint8_t> *out, const uint32_t *value, int n_symbols, int used,
                 int coder) {
  BitWriter bw{out};
  int i = 0;
  bool first = true;
  while (i < n_symbols) {
    int j = i;
    while (j < n_symbols && value[j] == 0)
      ++j;
    put_eg(bw, uint64_t(j - i - (first ? 0 : 1)), 0);
    first = false;
    if ((i = j) == n_symbols)
      break;
    while (j < n_symbols && value[j] != 0)
      ++j;
    put_eg(bw, uint64_t(j - i - 1), 0);
    i = j;
  }
  if (used >= 2) {
    AdaptiveK ak(initial_a(coder));
    int64_t prev = 0;
    for (int s = 0; s < n_symbols; ++s) {
      if (!value[s])
        continue;
      uint64_t z = zigzag(int64_t(value[s]) - prev);
      put_eg(bw, z, ak.k());
      ak.update(z);
      prev = value[s];
    }
  }
  bw.flush();
}

std::string read_table(const uint8_t *p, int64_t avail, int n_symbols, int coder, int64_t n,
                       int scale_bits, std::vector<uint32_t> *value, int *used, int64_t *nbytes) {
  BitReader br{p, avail * 8};
  value->assign(n_symbols, 0);
  int i = 0, u = 0;
  bool first = true;
  uint64_t r;
  while (i < n_symbols) {
    if (!get_eg(br, 0, &r))
      return "table truncated or corrupt (zero run)";
    r += first ? 0 : 1;
    first = false;
    if (r > uint64_t(n_symbols - i))
      return "table zero run overflows n_symbols";
    if ((i += int(r)) == n_symbols)
      break;
    if (!get_eg(br, 0, &r))
      return "table truncated or corrupt (used run)";
    if (r + 1 > uint64_t(n_symbols - i))
      return "table used run overflows n_symbols";
    for (uint64_t t = 0; t <= r; ++t)
      (*value)[i++] = 1; // marks used; real values below
    u += int(r + 1);
  }
  if (int64_t(u) > n)
    return "table lists more used symbols than there are elements";
  if (n > 0 && u == 0)
    return "table lists no used symbol for a nonempty stream";
  if (u >= 2) {
    AdaptiveK ak(initial_a(coder));
    int64_t prev = 0, sum = 0;
    const int64_t hi = coder == kAns ? (int64_t(1) << scale_bits) - 1 : kHuffMaxLen;
    for (int s = 0; s < n_symbols; ++s) {
      if (!(*value)[s])
        continue;
      uint64_t z;
      if (!get_eg(br, ak.k(), &z))
        return "table truncated or corrupt (symbol values)";
      ak.update(z);
      int64_t v = prev + unzigzag(z);
      if (v < 1 || v > hi) {
        return coder == kAns
                   ? "ANS frequency of symbol " + std::to_string(s) + " out of range"
                   : "Huffman code length of symbol " + std::to_string(s) + " out of range 1..16";
      }
      (*value)[s] = uint32_t(v);
      prev = v;
      sum += v;
    }
    if (coder == kAns && sum != (int64_t(1) << scale_bits)) {
      return "ANS frequencies sum to " + std::to_string(sum) + ", not the scale " +
             std::to_string(int64_t(1) << scale_bits);
    }
  } else if (u == 1) {
    for (auto &v : *value)
      v = v ? (coder == kAns ? uint32_t(1) << scale_bits : 1u) : 0u;
  }
  uint64_t pad; // canonical streams pad the table with zero bits
  int padn = int((8 - (br.pos & 7)) & 7);
  if (!br.get(padn, &pad) || pad != 0)
    return "table padding bits are not zero";
  *used = u;
  *nbytes = br.pos >> 3;
  return "";
}

void put_varint(std::vector<uint8_t> *out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(uint8_t(v | 0x80));
    v >>= 7;
  }
  out->push_back(uint8_t(v));
}

bool get_varint(const uint8_t *p, int64_t len, int64_t *pos, uint64_t *v) {
  uint64_t r = 0;
  for (int i = 0; i < 8; ++i) { // 56 bits are plenty for every field
    if (*pos >= len)
      return false;
    uint8_t b = p[(*pos)++];
    r |= uint64_t(b & 0x7f) << (7 * i);
    if (!(b & 0x80)) {
      if (b == 0 && i > 0)
        return false; // overlong: only the minimal form is accepted
      *v = r;
      return true;
    }
  }
  return false;
}

// The whole coding decision for a histogram: values, scale, lanes.
struct Plan {
  int coder, n_symbols, used = 0, scale_bits = 0, lanes = 0;
  int64_t n = 0;
  std::vector<uint32_t> value; // code length or frequency per symbol, 0 = unused
  std::vector<uint8_t> len;    // Huffman lengths as bytes
};

void write_header(std::vector<uint8_t> *out, const Plan &p) {
  out->push_back(uint8_t(kTagVersion | p.coder));
  put_varint(out, uint64_t(p.n_symbols));
  put_varint(out, uint64_t(p.n));
  if (p.coder == kAns)
    out->push_back(uint8_t(p.scale_bits));
}

int64_t table_bytes(const Plan &p) {
  std::vector<uint8_t> tmp;
  write_table(&tmp, p.value.data(), p.n_symbols, p.used, p.coder);
  return int64_t(tmp.size());
}

int64_t directory_bytes(int lanes, uint64_t total_units) {
  std::vector<uint8_t> tmp;
  put_varint(&tmp, uint64_t(lanes));
  return int64_t(tmp.size()) + (lanes >= 2 ? 1 + int64_t(lanes - 1) * byte_width(total_units) : 0);
}

Plan make_plan(const int64_t *counts, int n_symbols, int coder) {
  Plan p;
  p.coder = coder;
  p.n_symbols = n_symbols;
  p.value.assign(n_symbols, 0);
  for (int s = 0; s < n_symbols; ++s) {
    p.n += counts[s];
    p.used += counts[s] > 0;
  }
  p.lanes = p.used >= 2 ? lanes_for(coder, p.n) : 0;
  if (coder == kHuffman) {
    p.len.assign(n_symbols, 0);
    huffman_lengths(counts, n_symbols, p.len.data());
    for (int s = 0; s < n_symbols; ++s)
      p.value[s] = p.len[s];
    return p;
  }
  p.scale_bits = kAnsMaxScale;
  if (p.used <= 1) {
    for (int s = 0; s < n_symbols; ++s)
      p.value[s] = counts[s] ? uint32_t(1) << p.scale_bits : 0;
    return p;
  }
  // Scale: the one with the smallest table + payload bound, searched downwards from 2^16 and
  // stopped at the first increase: the quantisation cost falls ~2.5x per extra bit while the
  // table grows slowly, so the total is unimodal in practice, and big streams stop after two
  // tries (size_bits is called for every candidate of the search).
  int lo = kAnsMinScale;
  while ((int64_t(1) << lo) < 2 * int64_t(p.used) && lo < kAnsMaxScale)
    ++lo;
  uint64_t best = UINT64_MAX;
  std::vector<uint32_t> f(n_symbols);
  std::vector<uint8_t> tmp;
  for (int sb = kAnsMaxScale; sb >= lo; --sb) {
    ans_quantize(counts, n_symbols, sb, f.data());
    uint64_t bits = ans_payload_bound_bits(counts, n_symbols, f.data(), sb, p.lanes);
    tmp.clear();
    write_table(&tmp, f.data(), n_symbols, p.used, kAns);
    bits += 8 * tmp.size() + 8 * directory_bytes(p.lanes, bits / 32);
    if (bits > best)
      break;
    best = bits;  // ties go to the smaller scale (smaller decoding table)
    p.scale_bits = sb;
    p.value = f;
  }
  return p;
}

// Header, table and directory of a stream; payload located. Shared by decode() and inspect().
struct Parsed {
  Sizes sizes;
  std::vector<uint32_t> value;
  std::vector<uint64_t> lane_off;
  const uint8_t *payload = nullptr;
};

std::string parse(const uint8_t *data, int64_t len, Parsed *ps) {
  Sizes &z = ps->sizes;
  int64_t pos = 0;
  uint64_t v;
  if (len < 1)
    return "empty stream (no header)";
  uint8_t tag = data[pos++];
  if ((tag & 0xf0) != kTagVersion)
    return "unknown format version in tag byte " + std::to_string(tag);
  z.coder = tag & 0x0f;
  if (z.coder != kHuffman && z.coder != kAns)
    return "unknown coder id " + std::to_string(z.coder);
  if (!get_varint(data, len, &pos, &v))
    return "header truncated or corrupt (n_symbols)";
  if (v < 1 || v > uint64_t(kMaxSymbols))
    return "n_symbols " + std::to_string(v) + " out of 1..65536";
  z.n_symbols = int(v);
  if (!get_varint(data, len, &pos, &v))
    return "header truncated or corrupt (element count)";
  if (v >= uint64_t(kMaxCount))
    return "element count " + std::to_string(v) + " too large";
  z.n = int64_t(v);
  if (z.coder == kAns) {
    if (pos >= len)
      return "header truncated (scale bits)";
    z.scale_bits = data[pos++];
    if (z.scale_bits < kAnsMinScale || z.scale_bits > kAnsMaxScale)
      return "ANS scale bits " + std::to_string(z.scale_bits) + " out of 12..16";
  }
  z.header_bytes = pos;
  int64_t tb = 0;
  std::string err = read_table(data + pos, len - pos, z.n_symbols, z.coder, z.n, z.scale_bits,
                               &ps->value, &z.used, &tb);
  if (!err.empty())
    return err;
  if (z.coder == kHuffman && z.used >= 2) {
    std::vector<uint8_t> l8(ps->value.begin(), ps->value.end());
    err = huffman_check_lengths(l8.data(), z.n_symbols);
    if (!err.empty())
      return err;
  }
  z.table_bytes = tb;
  pos += tb;
  int64_t dir0 = pos;
  if (!get_varint(data, len, &pos, &v))
    return "directory truncated or corrupt (lane count)";
  if (z.used <= 1) {
    if (v != 0)
      return "lane count must be 0 when at most one symbol is used";
  } else if (v < 1 || v > uint64_t(kMaxLanes) || int64_t(v) > z.n) {
    return "lane count " + std::to_string(v) + " out of 1..min(4096, n)";
  }
  z.lanes = int(v);
  ps->lane_off.assign(z.lanes, 0);
  if (z.lanes >= 2) {
    if (pos >= len)
      return "directory truncated (offset width)";
    int w = data[pos++];
    if (w < 1 || w > 8)
      return "directory offset width " + std::to_string(w) + " out of 1..8";
    if (int64_t(z.lanes - 1) * w > len - pos)
      return "directory truncated (lane offsets)";
    for (int j = 1; j < z.lanes; ++j) {
      uint64_t o = 0;
      for (int b = 0; b < w; ++b)
        o |= uint64_t(data[pos++]) << (8 * b);
      if (o < ps->lane_off[j - 1])
        return "lane offsets are not increasing";
      ps->lane_off[j] = o;
    }
  }
  z.directory_bytes = pos - dir0;
  z.payload_bytes = len - pos;
  ps->payload = data + pos;
  if (z.lanes == 0 && z.payload_bytes != 0)
    return "payload of " + std::to_string(z.payload_bytes) + " bytes after a stream that has none";
  const uint64_t units =
      z.coder == kAns ? uint64_t(z.payload_bytes) / 4 : uint64_t(z.payload_bytes) * 8;
  if (z.lanes >= 1 && ps->lane_off.back() > units)
    return "lane offset beyond the payload";
  return "";
}

} // namespace
} // namespace detail

using namespace detail;

std::string histogram(const void *symbols, int elem_size, int64_t n, int n_symbols,
                      int64_t *counts) {
  std::fill(counts, counts + n_symbols, 0);
  if (elem_size == 1) {
    const uint8_t *s = static_cast<const uint8_t *>(symbols);
    if (n_symbols >= 256) { // every byte is in range: count without checks, 4 tables for ILP
      std::vector<int64_t> c(4 * 256, 0);
      int64_t i = 0;
      for (; i + 4 <= n; i += 4) {
        ++c[s[i]];
        ++c[256 + s[i + 1]];
        ++c[512 + s[i + 2]];
        ++c[768 + s[i + 3]];
      }
      for (; i < n; ++i)
        ++c[s[i]];
      for (int v = 0; v < 256; ++v)
        counts[v] = c[v] + c[256 + v] + c[512 + v] + c[768 + v];
      return "";
    }
    for (int64_t i = 0; i < n; ++i) {
      if (s[i] >= n_symbols)
        return "symbol " + std::to_string(s[i]) + " at index " + std::to_string(i) +
               " >= n_symbols";
      ++counts[s[i]];
    }
    return "";
  }
  const uint16_t *s = static_cast<const uint16_t *>(symbols);
  for (int64_t i = 0; i < n; ++i) {
    if (s[i] >= n_symbols)
      return "symbol " + std::to_string(s[i]) + " at index " + std::to_string(i) + " >= n_symbols";
    ++counts[s[i]];
  }
  return "";
}

std::string encode(const void *symbols, int elem_size, int64_t n, int n_symbols, int coder,
                   std::vector<uint8_t> *out) {
  if (coder != kHuffman && coder != kAns)
    return "unknown coder " + std::to_string(coder);
  if (n_symbols < 1 || n_symbols > kMaxSymbols)
    return "n_symbols out of 1..65536";
  if (elem_size != 1 && elem_size != 2)
    return "symbols must be 1 or 2 bytes wide";
  if (n < 0 || n >= kMaxCount)
    return "element count out of 0..2^48";
  std::vector<int64_t> counts(n_symbols);
  std::string err = histogram(symbols, elem_size, n, n_symbols, counts.data());
  if (!err.empty())
    return err;
  Plan p = make_plan(counts.data(), n_symbols, coder);
  out->clear();
  write_header(out, p);
  write_table(out, p.value.data(), n_symbols, p.used, coder);
  if (p.lanes == 0) {
    put_varint(out, 0);
    return "";
  }
  std::vector<uint8_t> payload;
  std::vector<uint64_t> off;
  if (coder == kHuffman) {
    huffman_encode(symbols, elem_size, n, p.len.data(), n_symbols, p.lanes, &payload, &off);
  } else {
    ans_encode(symbols, elem_size, n, p.value.data(), n_symbols, p.scale_bits, p.lanes, &payload,
               &off);
  }
  put_varint(out, uint64_t(p.lanes));
  if (p.lanes >= 2) {
    uint64_t units = coder == kAns ? payload.size() / 4 : payload.size() * 8;
    if (coder == kHuffman) { // the exact bit count, as measure() computes it
      units = 0;
      for (int s = 0; s < n_symbols; ++s)
        units += uint64_t(counts[s]) * p.len[s];
    }
    int w = byte_width(units);
    out->push_back(uint8_t(w));
    for (int j = 1; j < p.lanes; ++j)
      for (int b = 0; b < w; ++b)
        out->push_back(uint8_t(off[j] >> (8 * b)));
  }
  out->insert(out->end(), payload.begin(), payload.end());
  return "";
}

std::string decode(const uint8_t *data, int64_t len, void *out, int elem_size, int64_t n,
                   int n_symbols, int threads) {
  if (len < 0 || n < 0)
    return "negative length";
  Parsed ps;
  std::string err = parse(data, len, &ps);
  if (!err.empty())
    return err;
  const Sizes &z = ps.sizes;
  if (z.n_symbols != n_symbols)
    return "stream has n_symbols " + std::to_string(z.n_symbols) + ", expected " +
           std::to_string(n_symbols);
  if (z.n != n)
    return "stream has " + std::to_string(z.n) + " elements, expected " + std::to_string(n);
  if (elem_size != (n_symbols <= 256 ? 1 : 2))
    return "output element size does not fit n_symbols";
  if (z.used == 0)
    return "";
  if (z.used == 1) {
    uint16_t sym = 0;
    for (int s = 0; s < n_symbols; ++s)
      if (ps.value[s])
        sym = uint16_t(s);
    if (elem_size == 1) {
      std::memset(out, sym, size_t(n));
    } else {
      std::fill(static_cast<uint16_t *>(out), static_cast<uint16_t *>(out) + n, sym);
    }
    return "";
  }
  if (z.coder == kHuffman) {
    std::vector<uint8_t> l8(ps.value.begin(), ps.value.end());
    return huffman_decode(l8.data(), n_symbols, ps.payload, z.payload_bytes, ps.lane_off, out,
                          elem_size, n, threads);
  }
  return ans_decode(ps.value.data(), n_symbols, z.scale_bits, ps.payload, z.payload_bytes,
                    ps.lane_off, out, elem_size, n, threads);
}

namespace {
std::string check_counts(const int64_t *counts, int n_symbols, int coder) {
  if (coder != kHuffman && coder != kAns)
    return "unknown coder " + std::to_string(coder);
  if (n_symbols < 1 || n_symbols > kMaxSymbols)
    return "n_symbols out of 1..65536";
  int64_t total = 0;
  for (int s = 0; s < n_symbols; ++s) {
    if (counts[s] < 0)
      return "negative count for symbol " + std::to_string(s);
    total += counts[s];
    if (total >= kMaxCount)
      return "total count too large (>= 2^48)";
  }
  return "";
}
} // namespace

std::string plan(const int64_t *counts, int n_symbols, int coder, uint32_t *values, int *scale_bits,
                 int *lanes) {
  std::string err = check_counts(counts, n_symbols, coder);
  if (!err.empty())
    return err;
  Plan p = make_plan(counts, n_symbols, coder);
  std::copy(p.value.begin(), p.value.end(), values);
  *scale_bits = coder == kAns ? p.scale_bits : 0;
  *lanes = p.lanes;
  return "";
}

std::string measure(const int64_t *counts, int n_symbols, int coder, Sizes *sizes) {
  std::string err = check_counts(counts, n_symbols, coder);
  if (!err.empty())
    return err;
  Plan p = make_plan(counts, n_symbols, coder);
  Sizes &z = *sizes;
  z = Sizes();
  z.coder = coder;
  z.n_symbols = n_symbols;
  z.n = p.n;
  z.used = p.used;
  z.scale_bits = coder == kAns ? p.scale_bits : 0;
  z.lanes = p.lanes;
  std::vector<uint8_t> hdr;
  write_header(&hdr, p);
  z.header_bytes = int64_t(hdr.size());
  z.table_bytes = table_bytes(p);
  if (p.lanes == 0) {
    z.directory_bytes = 1;
    return "";
  }
  uint64_t units;
  if (coder == kHuffman) {
    units = 0;
    for (int s = 0; s < n_symbols; ++s)
      units += uint64_t(counts[s]) * p.len[s];
    z.payload_bytes = int64_t((units + 7) / 8);
  } else {
    uint64_t bits =
        ans_payload_bound_bits(counts, n_symbols, p.value.data(), p.scale_bits, p.lanes);
    units = bits / 32;
    z.payload_bytes = int64_t(units * 4);
    z.exact = false;
  }
  z.directory_bytes = directory_bytes(p.lanes, units);
  return "";
}

std::string inspect(const uint8_t *data, int64_t len, Sizes *sizes) {
  Parsed ps;
  std::string err = parse(data, len, &ps);
  *sizes = ps.sizes;
  return err;
}

} // namespace entropy
} // namespace wsq
