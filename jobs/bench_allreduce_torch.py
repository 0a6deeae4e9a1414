"""The reference for jobs/bench_allreduce.cpp: NCCL's all-reduce as PyTorch
drives it (torch.distributed, NCCL backend), same sizes, same timing
(each call waited for), same bus-bandwidth formula.
Usage: python -m torch.distributed.run --nproc_per_node N bench_allreduce_torch.py"""
import os
import time

import torch
import torch.distributed as dist


def main():
    dist.init_process_group("nccl")
    rank, n = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    if rank == 0:
        print("| bytes | float32 elements | time us | algbw GB/s | busbw GB/s |\n| ---: | ---: | ---: | ---: | ---: |")
    size = 1 << 20
    while size <= 1 << 28:
        t = torch.rand(size // 4, device="cuda")
        iterations = 20 if size >= 1 << 26 else 50
        for _ in range(5):
            dist.all_reduce(t)
        torch.cuda.synchronize()
        dist.barrier()
        start = time.perf_counter()
        for _ in range(iterations):
            dist.all_reduce(t)
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / iterations
        if rank == 0:
            algbw = size / seconds / 1e9
            print(f"| {size} | {size // 4} | {seconds * 1e6:.1f} | {algbw:.1f} | {algbw * 2 * (n - 1) / n:.1f} |")
        size *= 4
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
