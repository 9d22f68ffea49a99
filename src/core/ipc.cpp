#include "core/ipc.h"

namespace tern::ipc {

std::optional<Frame> FrameSplitter::next() {
  if (error_ || buffer_.size() < 6) return std::nullopt;
  auto byte = [&](size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(buffer_[i])); };
  uint32_t length = (byte(0) << 24) | (byte(1) << 16) | (byte(2) << 8) | byte(3);
  if (length < 2 || length > max_frame_size) {
    error_ = true;
    return std::nullopt;
  }
  if (buffer_.size() < 4 + static_cast<size_t>(length)) return std::nullopt;
  Frame f;
  f.type = static_cast<Type>((byte(4) << 8) | byte(5));
  f.payload = buffer_.substr(6, length - 2);
  buffer_.erase(0, 4 + static_cast<size_t>(length));
  return f;
}

}  // namespace tern::ipc
