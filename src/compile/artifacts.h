// What rank 0 writes after a compile, each file complete or absent:
//   model.qforge.pt     the compiled TorchScript model (loads without qforge)
//   model.qforge.onnx   the same model as ONNX Q/DQ for the target (ONNX targets)
//   quant_params.json   per layer: scheme, bits, scales, zero points, decision;
//                       nothing in it depends on the rank count or timing,
//                       so runs on any number of ranks give the same bytes
//   report.json         everything above plus sensitivity, SQNR, evaluation,
//                       sizes and time per phase and rank
//   summary.txt         the report as a table for people
//   config.yaml         the experiment as resolved
#pragma once
#include <string>
#include <vector>

#include "qforge/compile.h"

namespace qforge {

std::string quant_params_json(const CompileResult& result, const ExperimentConfig& config);
// rank_hosts: each rank's host, in rank order.
std::string report_json(const CompileResult& result, const ExperimentConfig& config,
                        const std::vector<std::string>& rank_hosts);
std::string summary_text(const CompileResult& result, const std::vector<std::string>& rank_hosts);

// One line of an evaluation's figures, as the summary and the fine-tuning log print them.
std::string evaluation_text(const EvaluationResult& e);
// The ONNX file against the TorchScript model, as the summary and log print it.
std::string onnx_evaluation_text(const EvaluationResult& e);

// Writes every artifact under config.out_dir and records their paths in result.artifacts.
void write_artifacts(CompileResult& result, const ExperimentConfig& config, const std::vector<std::string>& rank_hosts);

}  // namespace qforge
