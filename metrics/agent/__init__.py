"""The GPU node agent: NVML readings, pod attribution, DCGM-compatible /metrics, usage push."""
