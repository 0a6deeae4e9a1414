// Precompiled header: LibTorch's headers cost ~30 s per translation unit.
#pragma once
#include <torch/script.h>
#include <torch/torch.h>
#include <string>
#include <vector>
#include <map>
#include <memory>
