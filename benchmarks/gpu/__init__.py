"""benchmarks/gpu.sh: the modules behind benchmarks/bench_gpu.py."""
