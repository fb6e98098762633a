"""PyTorch's own matmul speed in fp32 and bf16 on this CPU (one thread), the figure behind the bf16 notes in
docs/training.md:  python3 bench/gemm/torch_matmul.py [M K N]   (default 2048 1024 1024)"""
import sys
import time

import torch

torch.set_num_threads(1)
M, K, N = (int(x) for x in sys.argv[1:4]) if len(sys.argv) >= 4 else (2048, 1024, 1024)
for dt in (torch.float32, torch.bfloat16):
    a, b = torch.randn(M, K, dtype=dt), torch.randn(K, N, dtype=dt)
    for _ in range(2):
        a @ b
    n, t = 3, time.perf_counter()
    for _ in range(n):
        a @ b
    print(f"{str(dt):15} {2 * M * K * N * n / (time.perf_counter() - t) / 1e9:8.2f} GFLOP/s  ({M}x{K}x{N}, 1 thread, torch {torch.__version__})")
