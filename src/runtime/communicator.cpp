// The Communicator's public calls, and the composite of a device backend and a host backend.
#include "runtime/communicator.h"

#include <ATen/Tensor.h>

#include <cstdlib>
#include <string>

#include "qforge/errors.h"

namespace qforge {

std::chrono::milliseconds collective_timeout(const CollectiveOptions& options) {
  if (options.timeout.count() > 0) return options.timeout;
  const char* text = std::getenv("QFORGE_COLLECTIVE_TIMEOUT_S");
  if (!text) return std::chrono::seconds(600);
  char* end = nullptr;
  const double seconds = std::strtod(text, &end);
  if (end == text || *end != '\0' || !(seconds > 0))
    throw ConfigError(std::string("QFORGE_COLLECTIVE_TIMEOUT_S=") + text + ": expected a positive number of seconds");
  return std::chrono::milliseconds(static_cast<long long>(seconds * 1000.0 + 0.5));
}

namespace {

CollectiveTraffic g_traffic;
thread_local int t_depth = 0;  // a composite's call to its inner backend is the same collective

// Counts one collective for the duration of a public call, unless it is nested in another.
class Counted {
 public:
  explicit Counted(const at::Tensor& tensor) {
    if (t_depth++ == 0) {
      ++g_traffic.calls;
      g_traffic.bytes += static_cast<int64_t>(tensor.numel()) * static_cast<int64_t>(tensor.element_size());
    }
  }
  ~Counted() { --t_depth; }
  Counted(const Counted&) = delete;
  Counted& operator=(const Counted&) = delete;
};

}  // namespace

CollectiveTraffic collective_traffic() { return g_traffic; }

void Communicator::all_reduce(at::Tensor& tensor, const CollectiveOptions& options) {
  Counted counted(tensor);
  reduce_all(tensor, options);
}

void Communicator::all_reduce_queued(at::Tensor& tensor, const CollectiveOptions& options) {
  Counted counted(tensor);
  queue_reduce_all(tensor, options);
}

void Communicator::broadcast(at::Tensor& tensor, const CollectiveOptions& options) {
  Counted counted(tensor);
  broadcast_from(tensor, options);
}

at::Tensor Communicator::all_gather(const at::Tensor& tensor, const CollectiveOptions& options) {
  Counted counted(tensor);
  return gather_all(tensor, options);
}

namespace {

class DeviceAndHost final : public Communicator {
 public:
  DeviceAndHost(std::unique_ptr<Communicator> device, std::unique_ptr<Communicator> host)
      : device_(std::move(device)), host_(std::move(host)) {}

  std::string backend() const override { return device_->backend(); }
  int rank() const override { return device_->rank(); }
  int size() const override { return device_->size(); }
  void barrier() override { device_->barrier(); }
  void wait_queued() override { device_->wait_queued(); }  // the host side completes every call

 protected:
  void reduce_all(at::Tensor& tensor, const CollectiveOptions& o) override { side(tensor).all_reduce(tensor, o); }
  void broadcast_from(at::Tensor& tensor, const CollectiveOptions& o) override { side(tensor).broadcast(tensor, o); }
  at::Tensor gather_all(const at::Tensor& tensor, const CollectiveOptions& o) override {
    return side(tensor).all_gather(tensor, o);
  }
  void queue_reduce_all(at::Tensor& tensor, const CollectiveOptions& o) override {
    side(tensor).all_reduce_queued(tensor, o);
  }

 private:
  Communicator& side(const at::Tensor& tensor) { return tensor.is_cuda() ? *device_ : *host_; }

  std::unique_ptr<Communicator> device_, host_;
};

}  // namespace

std::unique_ptr<Communicator> combine_device_and_host(std::unique_ptr<Communicator> device,
                                                      std::unique_ptr<Communicator> host) {
  return std::make_unique<DeviceAndHost>(std::move(device), std::move(host));
}

}  // namespace qforge
