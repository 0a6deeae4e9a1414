// Uses the public API: load an experiment, inspect a model, bind the data.
#include <qforge/config_yaml.h>
#include <qforge/model.h>
#include <qforge/version.h>

#include <iostream>

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  const auto config = qforge::parse_config(
      "model: {path: " + std::string(argv[1]) + "}\ncalibration_inputs: {files: [" + argv[2] + "]}\n", "inline");
  auto model = qforge::Model::load(config.model.path);
  const auto data = qforge::inspect_dataset(config.calibration_inputs->files);
  model.bind(data, {});
  int quantizable = 0;
  for (const auto& layer : model.layers()) quantizable += layer.quantizable;
  std::cout << "qforge " << qforge::version() << ": " << quantizable << " quantizable layers, " << data.total_rows()
            << " rows\n";
  return quantizable == 21 && data.total_rows() == 37 ? 0 : 1;
}
