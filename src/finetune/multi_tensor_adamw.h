#pragma once

#include <torch/optim/adamw.h>

#include <vector>

namespace qforge {

// AdamW that moves all of a group's tensors with a handful of multi-tensor
// (foreach) ops instead of about ten ops per tensor. Fine-tuning learns ~100
// small adapter tensors; launching their updates one by one cost 8-11 ms of a
// 40 ms step on a GPU. The arithmetic is torch::optim::AdamW's (bit for bit on
// a CPU, where foreach ops run tensor by tensor), and so are the state and its
// checkpoint format: a checkpoint written by either resumes in the other.
// AMSGrad and closures take torch::optim::AdamW's own step.
class MultiTensorAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;
  at::Tensor step(LossClosure closure = nullptr) override;

 private:
  torch::optim::AdamWParamState& state_of(const at::Tensor& parameter);
};

// Scales the gradients so that their joint 2-norm is at most `max_norm`, as
// torch::nn::utils::clip_grad_norm_ does, but with multi-tensor ops and without
// reading the norm back (that read made the host wait for the device each step).
void clip_gradient_norm(const std::vector<at::Tensor>& parameters, double max_norm);

}  // namespace qforge
