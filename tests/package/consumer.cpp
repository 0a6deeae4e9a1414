// The C++ API as a user's program, built against the installed package: one
// qforge::compile call with a data-transform callback (README, "C++ API").
// Usage: consumer MODEL.pt CALIBRATION.h5 OUT_DIR   (under mpirun for several ranks)
#include <qforge/compile.h>
#include <qforge/deployment.h>
#include <qforge/errors.h>
#include <qforge/runtime.h>

#include <iostream>

int main(int argc, char** argv) {
  auto& runtime = qforge::Runtime::init(&argc, &argv);
  if (argc != 4) return 2;
  qforge::ExperimentConfig config;
  config.model.path = argv[1];
  config.out_dir = argv[3];
  qforge::CalibrationSettings data;
  data.files = {argv[2]};
  data.batch_size = 8;
  config.calibration_inputs = data;
  config.deployment_settings = qforge::DeploymentSettings{qforge::Target::OnnxRuntime};
  config.quantization_settings = qforge::preset_quantization_settings(qforge::Target::OnnxRuntime);
  config.layer_quantization_settings["fc"].skip = true;  // keep the classifier in floating point
  int code = 0;
  try {
    config.validate();
    qforge::CompileCallbacks callbacks;  // clika_compile's data_transform_fn
    callbacks.data_transform = [](qforge::Batch& batch, const qforge::DatasetInfo&) {
      batch.inputs[0] = batch.inputs[0].clamp(-3, 3);
    };
    callbacks.forward = [](torch::jit::Module& module, const qforge::Batch& batch) {  // clika_compile's forward_fn
      return module.forward({batch.inputs[0]});
    };
    const qforge::CompileResult result = qforge::compile(config, callbacks);
    int quantized = 0;
    for (const auto& layer : result.layers) quantized += layer.quantized;
    std::cout << "compiled " << result.graph_name << ": " << quantized << " of " << result.layers.size()
              << " layers quantized, " << result.float_bytes << " -> " << result.deployed_bytes << " bytes\n";
    code = quantized == 20 && result.layers.size() == 21 ? 0 : 1;
  } catch (const qforge::Error& e) {
    std::cerr << "consumer: " << e.what() << "\n";
    code = e.exit_code();
  }
  runtime.finalize();
  return code;
}
