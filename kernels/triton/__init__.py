"""Triton kernels, one module per op of `kernels` (same module names). Imported only when a kernel runs on a CUDA
tensor, or on a CPU tensor under Triton's interpreter (TRITON_INTERPRET=1 before the first import)."""
