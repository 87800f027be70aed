"""torch.distributed all-reduce with the gloo backend between processes of this machine: the
reference half of scripts/bench/all_reduce.sh. Prints one JSON line per size from rank 0, as
crates/dgr-collective/benches/all_reduce.rs does.

    python3 scripts/bench/all_reduce_gloo.py [RANKS [REPEATS]]

ALL_REDUCE_BACKEND=nccl runs torch's NCCL backend on device buffers instead (rank r on GPU
r % ALL_REDUCE_GPUS, default 1), the reference of the NCCL half of scripts/device-check.sh.
"""
import json
import os
import socket
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

SIZES_MIB = [1, 4, 16, 64, 256]
BACKEND = os.environ.get("ALL_REDUCE_BACKEND", "gloo")


def rank_main(rank, ranks, repeats, port):
    device = "cpu"
    if BACKEND == "nccl":
        device = f"cuda:{rank % int(os.environ.get('ALL_REDUCE_GPUS', '1'))}"
        torch.cuda.set_device(device)
    dist.init_process_group(BACKEND, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=ranks)
    sync = torch.cuda.synchronize if BACKEND == "nccl" else (lambda: None)
    for mib in SIZES_MIB:
        buffer = torch.ones(mib << 18, dtype=torch.float32, device=device)
        dist.all_reduce(buffer)
        sync()
        seconds = []
        for _ in range(repeats):
            dist.barrier()
            sync()
            started = time.perf_counter()
            dist.all_reduce(buffer)
            sync()
            seconds.append(time.perf_counter() - started)
        seconds.sort()
        median = seconds[len(seconds) // 2]
        if rank == 0:
            size = buffer.numel() * 4
            print(json.dumps({"impl": f"{BACKEND} (torch {torch.__version__})", "ranks": ranks, "bytes": size,
                              "seconds": round(median, 6), "bytes_per_second": round(size / median, 1)}), flush=True)
    dist.destroy_process_group()


def main():
    ranks = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(rank_main, args=(ranks, repeats, port), nprocs=ranks, join=True)


if __name__ == "__main__":
    main()
