"""Memory plans: which parts a tool loads, how many parameters each has (counted exactly from
the public configs on the meta device), and how to fit them with the page's default request
on a device of a given memory: fully resident, group offloading, model or sequential CPU
offload, and lower-precision storage (fp8 layerwise casting, GGUF, NF4).

Pure logic: importing it loads no weights and no torch (counts come from `counts.json`).
"""
