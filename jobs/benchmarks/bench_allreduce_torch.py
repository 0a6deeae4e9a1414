"""The reference for jobs/benchmarks/bench_allreduce.cpp: NCCL's all-reduce as PyTorch
drives it (torch.distributed, NCCL backend), same sizes, same bus-bandwidth
formula; timed both as qforge calls it (each call waited for) and as
nccl-tests measures NCCL's peak (calls back to back, one wait at the end).
Usage: python -m torch.distributed.run --nproc_per_node N bench_allreduce_torch.py"""
import os
import time

import torch
import torch.distributed as dist


def seconds_per_call(t, iterations, wait_each):
    dist.barrier()
    start = time.perf_counter()
    for _ in range(iterations):
        dist.all_reduce(t)
        if wait_each:
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / iterations


def main():
    dist.init_process_group("nccl")
    rank, n = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    if rank == 0:
        print("| bytes | float32 elements | time us (each waited) | busbw GB/s (each waited) "
              "| time us (back to back) | busbw GB/s (back to back: NCCL's peak) |\n| ---: | ---: | ---: | ---: | ---: | ---: |")
    size = 1 << 20
    while size <= 1 << 28:
        t = torch.rand(size // 4, device="cuda")
        iterations = 20 if size >= 1 << 26 else 50
        for _ in range(5):
            dist.all_reduce(t)
        torch.cuda.synchronize()
        waited = seconds_per_call(t, iterations, wait_each=True)
        piped = seconds_per_call(t, iterations, wait_each=False)
        if rank == 0:
            bus = 2 * (n - 1) / n * size / 1e9
            print(f"| {size} | {size // 4} | {waited * 1e6:.1f} | {bus / waited:.1f} | {piped * 1e6:.1f} | {bus / piped:.1f} |")
        size *= 4
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
