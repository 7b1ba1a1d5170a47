#include "serve/progress.h"

#include <algorithm>
#include <cmath>

#include "common/events.h"

namespace imapstage::serve {

ProgressTracker::ProgressTracker(Publish publish, std::function<double()> clock)
    : publish_(std::move(publish)), clock_(clock ? std::move(clock) : std::function<double()>(now_seconds)) {}

void ProgressTracker::phase(const std::string& name) {
  std::lock_guard lock(mutex_);
  moved_before_ += phase_bytes();
  folder_now_.clear();
  folders_ = folders_done_ = 0;
  messages_total_ = bytes_total_ = 0;
  have_totals_ = false;
  phase_ = name;
  publish(true);
}

void ProgressTracker::observe(const nlohmann::json& e) {
  std::string name = e.value("event", "");
  std::lock_guard lock(mutex_);
  if (name == "message_error" || name == "folder_error" || name == "warning" || name == "message_skipped") {
    if (problems_.size() < 20)
      problems_.push_back({{"event", name}, {"phase", phase_}, {"folder", e.value("folder", "")},
                           {"uid", e.contains("uid") ? e["uid"] : nlohmann::json()},
                           {"text", e.contains("text") ? e.value("text", "") : e.value("error", "")}});
    return;
  }
  if (phase_ != "export" && phase_ != "import") return;
  auto n = [&](const char* key) -> uint64_t {
    if (!e.contains(key) || !e[key].is_number()) return 0;
    if (e[key].is_number_unsigned()) return e[key].get<uint64_t>();
    double v = e[key].get<double>();
    return v > 0 ? static_cast<uint64_t>(v) : 0;
  };
  if (name == "totals") {
    folders_ = n("folders");
    messages_total_ = n("messages_total");
    bytes_total_ = n("bytes_total");
    have_totals_ = true;
  } else if (name == "folder_start") {
    folders_ = std::max<uint64_t>(folders_, n("folders"));
    if (!have_totals_) {
      messages_total_ += n("messages_total");
      bytes_total_ += n("bytes_total");
    }
  } else if (name == "progress") {
    folder_now_[e.value("folder", "")] = {n("messages"), n("bytes")};
  } else if (name == "folder_done") {
    ++folders_done_;
  } else {
    return;
  }
  publish(false);
}

nlohmann::json ProgressTracker::problems() const {
  std::lock_guard lock(mutex_);
  return problems_;
}

nlohmann::json ProgressTracker::samples(size_t most) const {
  std::lock_guard lock(mutex_);
  nlohmann::json out = nlohmann::json::array();
  size_t n = samples_.size();
  auto add = [&](size_t i) { out.push_back({std::round(samples_[i].first * 100) / 100, samples_[i].second}); };
  if (n == 0 || most == 0) return out;
  if (n <= most) {
    for (size_t i = 0; i < n; ++i) add(i);
  } else if (most == 1) {
    add(n - 1);
  } else {  // `most` indices spread from the first to the last
    for (size_t k = 0; k < most; ++k) add(k * (n - 1) / (most - 1));
  }
  return out;
}

uint64_t ProgressTracker::phase_bytes() const {
  uint64_t b = 0;
  for (auto& [f, mb] : folder_now_) b += mb.second;
  return b;
}

void ProgressTracker::publish(bool force) {
  double now = clock_();
  if (!force && now - last_ < 1.0) return;
  last_ = now;
  uint64_t messages = 0, bytes = phase_bytes();
  for (auto& [f, mb] : folder_now_) messages += mb.first;
  uint64_t moved = moved_before_ + bytes;
  samples_.push_back({now, moved});
  if (samples_.size() > kMaxSamples) {  // halve the resolution, keep the span
    std::vector<std::pair<double, uint64_t>> kept;
    for (size_t i = 0; i < samples_.size(); i += 2) kept.push_back(samples_[i]);
    if (kept.back() != samples_.back()) kept.push_back(samples_.back());
    samples_ = std::move(kept);
  }
  // The rate over the last 30 seconds of samples (at least one step back).
  double rate = 0;
  size_t first = samples_.size() - 1;
  while (first > 0 && samples_[first - 1].first >= now - 30) --first;
  if (first == samples_.size() - 1 && first > 0) --first;
  if (double dt = now - samples_[first].first; dt >= 0.5) rate = double(moved - samples_[first].second) / dt;
  double eta = -1;
  if (rate > 0 && bytes_total_ >= bytes) eta = double(bytes_total_ - bytes) / rate;
  nlohmann::json tail = nlohmann::json::array();
  for (size_t i = samples_.size() > 60 ? samples_.size() - 60 : 0; i < samples_.size(); ++i)
    tail.push_back({std::round(samples_[i].first * 100) / 100, samples_[i].second});
  nlohmann::json p = {{"phase", phase_},
                      {"folders", folders_},
                      {"folders_done", folders_done_},
                      {"messages_total", messages_total_},
                      {"messages", messages},
                      {"bytes_total", bytes_total_},
                      {"bytes", bytes},
                      {"moved", moved},
                      {"rate", std::round(rate)},
                      {"eta", std::round(eta)},
                      {"updated", now},
                      {"samples", tail}};
  uint64_t since = moved - published_;
  published_ = moved;
  publish_(std::move(p), since);
}

}  // namespace imapstage::serve
