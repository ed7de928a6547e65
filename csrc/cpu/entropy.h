// Entropy coding of index streams: canonical length-limited Huffman (the paper's coder) and
// interleaved rANS (near entropy). One encoded stream is a self-contained byte string:
//
//   header     u8 tag = 0x10 | coder (1 huffman, 2 ans); varint n_symbols (1..65536);
//              varint n (element count, < 2^48); ans only: u8 scale_bits (12..16)
//   table      bit-packed (LSB first), padded with zero bits to a byte: the used-symbol set as
//              alternating zero/used run lengths (Exp-Golomb), then, when >= 2 symbols are used,
//              each used symbol's value (Huffman code length 1..16 / ANS frequency 1..2^sb-1) as
//              the zigzag delta from the previous one, adaptive Exp-Golomb (LOCO-I style k)
//   directory  varint lanes K (0 when <= 1 symbol is used: no payload at all);
//              K >= 2: u8 width w (1..8), then K-1 little-endian w-byte offsets where lanes
//              1..K-1 start (Huffman: in bits; ANS: in 32-bit words)
//   payload    Huffman: one LSB-first bit stream, the K lanes back to back, zero-padded to a byte.
//              ANS: per lane, the final 64-bit state (two LE words) then its 32-bit words.
//
// Lane j codes the contiguous elements [n*j/K, n*(j+1)/K). Every quantity that sizes the stream
// (lanes, table, w) is a function of the histogram, so measure() needs no coding: Huffman sizes
// are exact, ANS sizes a proven upper bound (see entropy_rans.cpp). Decoding validates every field before
// allocating and returns a message naming the defect instead of crashing.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace wsq {
namespace entropy {

enum Coder : int { kHuffman = 1, kAns = 2 };

struct Sizes {
  int coder = 0;
  int n_symbols = 0;
  int64_t n = 0;
  int used = 0;       // symbols with a nonzero count
  int scale_bits = 0; // ANS frequency scale (log2), 0 for Huffman
  int lanes = 0;      // interleaved lanes (0: no payload)
  int64_t header_bytes = 0, table_bytes = 0, directory_bytes = 0, payload_bytes = 0;
  bool exact = true; // false: payload_bytes is an upper bound (ANS from a histogram)
  int64_t total() const { return header_bytes + table_bytes + directory_bytes + payload_bytes; }
};

// Histogram of n symbols (elem_size 1 or 2 bytes); "" or a message naming the first bad symbol.
std::string histogram(const void *symbols, int elem_size, int64_t n, int n_symbols,
                      int64_t *counts);
// Encodes n symbols (values < n_symbols) with `coder`; the stream replaces *out.
std::string encode(const void *symbols, int elem_size, int64_t n, int n_symbols, int coder,
                   std::vector<uint8_t> *out);
// Decodes a stream of `len` bytes into n elements of elem_size bytes (1 iff n_symbols <= 256).
// Returns "" or the defect. threads <= 0: OpenMP's default; lanes are decoded in parallel.
std::string decode(const uint8_t *data, int64_t len, void *out, int elem_size, int64_t n,
                   int n_symbols, int threads);
// Sizes of the stream encode() would produce for this histogram, without coding.
std::string measure(const int64_t *counts, int n_symbols, int coder, Sizes *sizes);
// The code encode() would use for this histogram: values[s] = Huffman code length or ANS
// frequency (0 for unused symbols); *scale_bits (ANS, else 0) and *lanes.
std::string plan(const int64_t *counts, int n_symbols, int coder, uint32_t *values, int *scale_bits,
                 int *lanes);
// Sizes and fields of an encoded stream (validates header, table and directory, not the payload).
std::string inspect(const uint8_t *data, int64_t len, Sizes *sizes);

} // namespace entropy
} // namespace wsq
