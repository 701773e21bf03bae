// Decoding and keeping sparse masks (see sparse_mask.h).
#include "sparse_mask.h"

#include <algorithm>
#include <cstring>
#include <list>
#include <mutex>
#include <stdexcept>
#include <string>

#include "thread_pool.h"

namespace swcnn {
namespace {

// Empty when the mask of `u` is consistent with its count for shape `s`,
// else what is wrong; fills begin[] on the way (both passes run over the
// 16 positions in parallel: at batch 1 a serial pass would cost as much as
// the products of a large layer).
std::string count_mask(const ConvShape& s, const SparseKernel& u, std::vector<int64_t>& begin) {
  const int64_t K = s.out_channels, words = sparse_mask_words(s.in_channels);
  const uint32_t past_c = s.in_channels % 32 == 0 ? 0u : ~0u << (s.in_channels % 32);
  begin.assign(16 * K + 1, 0);
  bool stray[16] = {};
  parallel_for_each(16, [&](int64_t t) {
    for (int64_t k = 0; k < K; ++k) {
      const uint32_t* word = u.mask + (t * K + k) * words;
      int64_t set = 0;
      for (int64_t w = 0; w < words; ++w) set += __builtin_popcount(word[w]);
      if ((word[words - 1] & past_c) != 0) stray[t] = true;
      begin[t * K + k + 1] = set;
    }
  });
  for (bool any : stray)
    if (any) return "the mask has bits set past the input channels";
  for (int64_t column = 0; column < 16 * K; ++column) begin[column + 1] += begin[column];
  if (begin[16 * K] != u.count)
    return "the mask has " + std::to_string(begin[16 * K]) + " bits set but " +
           std::to_string(u.count) + " values were given";
  return {};
}

std::string check_sparse_shape(const ConvShape& s, const SparseKernel& u) {
  std::string error = validate(s);
  if (!error.empty()) return error;
  // Lane offsets of input channels are 32-bit.
  if (s.in_channels > (int64_t(1) << 24)) return "too many input channels for the sparse kernel";
  if (u.count < 0 || u.count > 16 * s.in_channels * s.out_channels)
    return "the number of stored weights must be between 0 and 16 * C * K";
  if (u.mask == nullptr || (u.values == nullptr && u.count > 0)) return "missing mask or values";
  return {};
}

// 32-bit words in the whole mask of a kernel of shape `s`.
int64_t mask_words(const ConvShape& s) {
  return 16 * s.out_channels * sparse_mask_words(s.in_channels);
}

// Decodes (and checks) the mask of `u`; throws std::invalid_argument.
std::shared_ptr<DecodedMask> decode(const ConvShape& s, const SparseKernel& u) {
  auto decoded = std::make_shared<DecodedMask>();
  const std::string error = count_mask(s, u, decoded->begin);
  if (!error.empty()) throw std::invalid_argument(error);
  const int64_t K = s.out_channels, words = sparse_mask_words(s.in_channels);
  decoded->channel.resize(std::max<int64_t>(u.count, 1));
  parallel_for_each(16, [&](int64_t t) {
    for (int64_t k = 0; k < K; ++k) {
      int32_t* out = decoded->channel.data() + decoded->begin[t * K + k];
      const uint32_t* word = u.mask + (t * K + k) * words;
      for (int64_t w = 0; w < words; ++w)
        for (uint32_t bits = word[w]; bits != 0; bits &= bits - 1)
          *out++ = int32_t(w * 32 + __builtin_ctz(bits));
    }
  });
  return decoded;
}

bool same_words(const uint32_t* a, const uint32_t* b, size_t words) {
  return std::memcmp(a, b, words * sizeof(uint32_t)) == 0;
}

// The decoded masks of recent calls, most recently used first: as many as
// the layers of a large network, within a memory bound. Each entry keeps the
// mask it was decoded from (its key).
class MaskCache {
 public:
  static constexpr size_t kMaxEntries = 128;
  static constexpr size_t kMaxBytes = size_t(256) << 20;

  std::shared_ptr<const DecodedMask> find(const ConvShape& s, const SparseKernel& u) {
    std::lock_guard<std::mutex> lock(mutex_);
    return find_locked(s, u.mask, u.count);
  }

  // Keeps `decoded`, the decoding of `mask`, unless another thread kept an
  // equal mask meanwhile; returns the decoding kept.
  std::shared_ptr<const DecodedMask> keep(const ConvShape& s, int64_t count,
                                          std::vector<uint32_t> mask,
                                          std::shared_ptr<const DecodedMask> decoded) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++decoded_;
    if (auto found = find_locked(s, mask.data(), count)) return found;
    const size_t bytes = mask.size() * sizeof(uint32_t) +
                         decoded->begin.size() * sizeof(int64_t) +
                         decoded->channel.size() * sizeof(int32_t);
    entries_.push_front(Entry{s.in_channels, s.out_channels, count, std::move(mask), decoded,
                              bytes});
    trim_locked();
    return decoded;
  }

  // Drops the least recently used entries past the bounds (after an
  // expansion grew an entry, too).
  void trim() {
    std::lock_guard<std::mutex> lock(mutex_);
    trim_locked();
  }

  DecodedMaskStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {int64_t(entries_.size()), decoded_};
  }

 private:
  struct Entry {
    int64_t in_channels, out_channels, count;
    std::vector<uint32_t> mask;
    std::shared_ptr<const DecodedMask> decoded;
    size_t decoded_bytes;  // mask, begin and channel
    size_t bytes() const { return decoded_bytes + decoded->expansion_bytes.load(); }
  };

  std::shared_ptr<const DecodedMask> find_locked(const ConvShape& s, const uint32_t* mask,
                                                 int64_t count) {
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->in_channels != s.in_channels || it->out_channels != s.out_channels ||
          it->count != count || !same_words(it->mask.data(), mask, it->mask.size()))
        continue;
      entries_.splice(entries_.begin(), entries_, it);
      return entries_.front().decoded;
    }
    return nullptr;
  }

  void trim_locked() {
    size_t bytes = 0;
    for (const Entry& entry : entries_) bytes += entry.bytes();
    while (entries_.size() > 1 && (entries_.size() > kMaxEntries || bytes > kMaxBytes)) {
      // min: an expansion finished since the sum may have grown this entry.
      bytes -= std::min(bytes, entries_.back().bytes());
      entries_.pop_back();
    }
  }

  std::mutex mutex_;
  std::list<Entry> entries_;
  int64_t decoded_ = 0;
};

MaskCache& cache() {
  static MaskCache* kept = new MaskCache;  // never destroyed: calls may run at exit
  return *kept;
}

}  // namespace

std::shared_ptr<const DecodedMask> decoded_mask(const ConvShape& s, const SparseKernel& u) {
  const std::string error = check_sparse_shape(s, u);
  if (!error.empty()) throw std::invalid_argument(error);
  if (auto found = cache().find(s, u)) return found;
  // Read the mask once: another thread may rewrite the caller's buffer
  // meanwhile, and what is kept must be the mask that was decoded.
  std::vector<uint32_t> mask(u.mask, u.mask + mask_words(s));
  const SparseKernel copy{mask.data(), u.values, u.count};
  std::shared_ptr<const DecodedMask> decoded = decode(s, copy);
  return cache().keep(s, u.count, std::move(mask), std::move(decoded));
}

std::shared_ptr<const Expansion> expanded_kernel(const ConvShape& s, const SparseKernel& u,
                                                 const DecodedMask& decoded) {
  std::shared_ptr<const Expansion> kept;
  {
    std::lock_guard<std::mutex> lock(decoded.expansion_mutex);
    kept = decoded.expansion;
  }
  // Compared outside the lock (an Expansion never changes once made).
  if (kept != nullptr && kept->values.size() == size_t(u.count) &&
      (u.count == 0 || std::memcmp(kept->values.data(), u.values,
                                   size_t(u.count) * sizeof(float)) == 0))
    return kept;
  const int64_t C = s.in_channels, K = s.out_channels;
  auto expansion = std::make_shared<Expansion>();
  // The values read once, as the mask is: expanded from the copy kept as the key.
  expansion->values.assign(u.values, u.values + u.count);
  expansion->kernel.assign(16 * C * K, 0.0f);
  const float* values = expansion->values.data();
  float* dense = expansion->kernel.data();
  parallel_for_each(16, [&](int64_t t) {
    float* plane = dense + t * C * K;
    for (int64_t k = 0; k < K; ++k)
      for (int64_t e = decoded.begin[t * K + k]; e < decoded.begin[t * K + k + 1]; ++e)
        plane[decoded.channel[e] * K + k] = values[e];
  });
  {
    std::lock_guard<std::mutex> lock(decoded.expansion_mutex);
    decoded.expansion = expansion;
    decoded.expansion_bytes =
        (expansion->values.size() + expansion->kernel.size()) * sizeof(float);
  }
  cache().trim();
  return expansion;
}

DecodedMaskStats decoded_mask_stats() { return cache().stats(); }

}  // namespace swcnn
