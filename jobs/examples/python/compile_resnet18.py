"""Compile a torchvision ResNet-18 from Python in ten lines: INT8 for onnxruntime, calibrated on 64
images, checked on 32 more. python3 jobs/examples/python/compile_resnet18.py [RANKS]"""
import sys

import torch
import torchvision

import qforge

torch.manual_seed(0)                                                # the same model and data each run
model = torchvision.models.resnet18(num_classes=10).eval()
images = [torch.randn(16, 3, 64, 64) for _ in range(6)]            # your calibration batches
compiled = qforge.compile(model, calibration_inputs=images[:4], evaluation_inputs=images[4:],
                          deployment_settings=qforge.OnnxRuntimeSettings(),
                          quantization_settings=qforge.QuantizationSettings(),
                          out_dir="resnet18_int8", ranks=int(sys.argv[1]) if len(sys.argv) > 1 else 1)
print("top-1 agreement with the float model:", compiled.report["evaluation"]["top1_agreement"])
print("ONNX file:", compiled.onnx_path, "| output:", compiled(torch.randn(2, 3, 64, 64)).shape)
