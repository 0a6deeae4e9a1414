// Trains the quickstart's MNIST CNN with LibTorch: loads the scripted,
// untrained model, runs Adam on the training digits (read with qforge's
// HDF5 reader) and saves the trained TorchScript model atomically.
// Usage: qforge_train_mnist INIT.pt TRAIN.h5 OUT.pt [EPOCHS]
#include <torch/script.h>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <iostream>

#include "data/dataset.h"
#include "data/sample_reader.h"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: qforge_train_mnist INIT.pt TRAIN.h5 OUT.pt [EPOCHS]\n";
    return 2;
  }
  const std::string init = argv[1], train_file = argv[2], out = argv[3];
  const int epochs = argc > 4 ? std::stoi(argv[4]) : 3;
  try {
    torch::manual_seed(0);
    torch::jit::Module model = torch::jit::load(init);
    model.train();
    std::vector<at::Tensor> parameters;
    for (const auto& p : model.parameters()) parameters.push_back(p);
    torch::optim::Adam optimizer(parameters, torch::optim::AdamOptions(2e-3));
    const auto data = qforge::inspect_dataset({train_file}, {});
    for (int epoch = 0; epoch < epochs; ++epoch) {
      qforge::SampleReader reader(data, {0, data.total_rows()}, {64, 4, false, {}});
      double loss_sum = 0;
      int64_t correct = 0, seen = 0;
      while (auto batch = reader.next()) {
        const auto labels = batch->labels.to(torch::kLong);
        const auto logits = model.forward({batch->inputs[0]}).toTensor();
        const auto loss = torch::nn::functional::cross_entropy(logits, labels);
        optimizer.zero_grad();
        loss.backward();
        optimizer.step();
        loss_sum += loss.item<double>() * batch->rows();
        correct += logits.argmax(1).eq(labels).sum().item<int64_t>();
        seen += batch->rows();
      }
      std::printf("epoch %d: loss %.4f, train accuracy %.2f%%\n", epoch + 1, loss_sum / seen, 100.0 * correct / seen);
    }
    model.eval();
    const std::string temporary = out + ".tmp";
    model.save(temporary);
    std::filesystem::rename(temporary, out);
    std::printf("trained model saved to %s\n", out.c_str());
  } catch (const std::exception& e) {
    std::cerr << "qforge_train_mnist: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
