// Decoders and post-processors.
#include <utility>

#include "text/tokenizer_components.h"
#include "text/unicode.h"

namespace redhare::text {

namespace {

class ByteLevelDecoder final : public Decoder {
 public:
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    std::string bytes;
    for (const std::string& t : tokens) {
      // A token with any character outside the byte map (an added token, say) stands for its
      // own UTF-8 bytes.
      const std::size_t mark = bytes.size();
      bool mapped = true;
      for (std::size_t i = 0; i < t.size();) {
        const int b = unicode_to_byte(utf8_next(t, i));
        if (b < 0) {
          mapped = false;
          break;
        }
        bytes.push_back(static_cast<char>(b));
      }
      if (!mapped) {
        bytes.resize(mark);
        bytes += t;
      }
    }
    std::vector<std::string> out;
    out.push_back(utf8_lossy(bytes));
    return out;
  }
};

class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, PrependScheme scheme)
      : replacement_(std::move(replacement)), scheme_(scheme) {}
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (std::size_t k = 0; k < tokens.size(); ++k) {
      const bool drop = k == 0 && scheme_ != PrependScheme::kNever;
      std::string out;
      const std::string& t = tokens[k];
      for (std::size_t at = 0; at < t.size();) {
        if (t.compare(at, replacement_.size(), replacement_) == 0) {
          if (!drop) out.push_back(' ');
          at += replacement_.size();
        } else {
          out.push_back(t[at++]);
        }
      }
      tokens[k] = std::move(out);
    }
    return tokens;
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
};

// "<0xAB>" -> 0xAB, parsed the way Rust's u8::from_str_radix(.., 16) reads the two characters.
int byte_token_value(const std::string& t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  if (t[3] == '+') return hex(t[4]);
  const int hi = hex(t[3]), lo = hex(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

class ByteFallbackDecoder final : public Decoder {
 public:
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (utf8_is_valid(pending)) {
        out.push_back(pending);
      } else {
        // Bytes that do not form text become one replacement character each.
        for (std::size_t k = 0; k < pending.size(); ++k) out.emplace_back("\xEF\xBF\xBD");
      }
      pending.clear();
    };
    for (std::string& t : tokens) {
      const int b = byte_token_value(t);
      if (b >= 0) {
        pending.push_back(static_cast<char>(b));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    return out;
  }
};

class FuseDecoder final : public Decoder {
 public:
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    std::vector<std::string> out;
    out.push_back(std::move(all));
    return out;
  }
};

class StripDecoder final : public Decoder {
 public:
  StripDecoder(char32_t content, std::size_t start, std::size_t stop)
      : content_(content), start_(start), stop_(stop) {}
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (std::string& t : tokens) {
      std::vector<std::pair<std::size_t, char32_t>> chars;  // (byte offset, character)
      for (std::size_t i = 0; i < t.size();) {
        const std::size_t at = i;
        chars.emplace_back(at, utf8_next(t, i));
      }
      std::size_t begin = 0, end = chars.size();
      while (begin < start_ && begin < chars.size() && chars[begin].second == content_) ++begin;
      for (std::size_t k = 0; k < stop_ && end > begin && chars[end - 1].second == content_; ++k) {
        --end;
      }
      const std::size_t b = begin < chars.size() ? chars[begin].first : t.size();
      const std::size_t e = end < chars.size() ? chars[end].first : t.size();
      t = t.substr(b, e - b);
    }
    return tokens;
  }

 private:
  char32_t content_;
  std::size_t start_, stop_;
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(Pattern pattern, std::string content)
      : normalizer_(make_replace_normalizer(std::move(pattern), std::move(content))) {}
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (std::string& t : tokens) t = normalizer_->apply(std::move(t));
    return tokens;
  }

 private:
  std::unique_ptr<Normalizer> normalizer_;
};

// The BPE decoder of suffix-marked vocabularies ("</w>"): the suffix becomes a space, except at
// the very end.
class BpeSuffixDecoder final : public Decoder {
 public:
  explicit BpeSuffixDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (std::size_t k = 0; k < tokens.size(); ++k) {
      const std::string with = k + 1 == tokens.size() ? "" : " ";
      std::string out;
      const std::string& t = tokens[k];
      for (std::size_t at = 0; at < t.size();) {
        if (!suffix_.empty() && t.compare(at, suffix_.size(), suffix_) == 0) {
          out += with;
          at += suffix_.size();
        } else {
          out.push_back(t[at++]);
        }
      }
      tokens[k] = std::move(out);
    }
    return tokens;
  }

 private:
  std::string suffix_;
};

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> s) : steps_(std::move(s)) {}
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (const auto& d : steps_) tokens = d->decode_chain(std::move(tokens));
    return tokens;
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

class TemplatePostProcessor final : public PostProcessor {
 public:
  explicit TemplatePostProcessor(std::vector<TemplatePart> single) : single_(std::move(single)) {}
  std::vector<int32_t> process(std::vector<int32_t> ids) const override {
    std::vector<int32_t> out;
    out.reserve(ids.size() + 4);
    for (const TemplatePart& part : single_) {
      if (part.is_sequence) {
        out.insert(out.end(), ids.begin(), ids.end());
      } else {
        out.insert(out.end(), part.ids.begin(), part.ids.end());
      }
    }
    return out;
  }

 private:
  std::vector<TemplatePart> single_;
};

class SequencePostProcessor final : public PostProcessor {
 public:
  explicit SequencePostProcessor(std::vector<std::unique_ptr<PostProcessor>> s)
      : steps_(std::move(s)) {}
  std::vector<int32_t> process(std::vector<int32_t> ids) const override {
    for (const auto& p : steps_) ids = p->process(std::move(ids));
    return ids;
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

}  // namespace

std::unique_ptr<Decoder> make_byte_level_decoder() {
  return std::make_unique<ByteLevelDecoder>();
}
std::unique_ptr<Decoder> make_metaspace_decoder(std::string replacement, PrependScheme scheme) {
  return std::make_unique<MetaspaceDecoder>(std::move(replacement), scheme);
}
std::unique_ptr<Decoder> make_byte_fallback_decoder() {
  return std::make_unique<ByteFallbackDecoder>();
}
std::unique_ptr<Decoder> make_fuse_decoder() {
  return std::make_unique<FuseDecoder>();
}
std::unique_ptr<Decoder> make_strip_decoder(char32_t content, std::size_t start, std::size_t stop) {
  return std::make_unique<StripDecoder>(content, start, stop);
}
std::unique_ptr<Decoder> make_replace_decoder(Pattern pattern, std::string content) {
  return std::make_unique<ReplaceDecoder>(std::move(pattern), std::move(content));
}
std::unique_ptr<Decoder> make_bpe_suffix_decoder(std::string suffix) {
  return std::make_unique<BpeSuffixDecoder>(std::move(suffix));
}
std::unique_ptr<Decoder> make_sequence_decoder(std::vector<std::unique_ptr<Decoder>> s) {
  return std::make_unique<SequenceDecoder>(std::move(s));
}
std::unique_ptr<PostProcessor> make_template_postprocessor(std::vector<TemplatePart> single) {
  return std::make_unique<TemplatePostProcessor>(std::move(single));
}
std::unique_ptr<PostProcessor> make_sequence_postprocessor(
    std::vector<std::unique_ptr<PostProcessor>> s) {
  return std::make_unique<SequencePostProcessor>(std::move(s));
}

}  // namespace redhare::text
