"""The CUDA layer: graph pools, the capture session, captured graphs, static buffers,
host callbacks, runners, breakable captures and rebinding.

Every module here imports CuPy lazily (cgraph.cuda.device), so importing one works on a
machine without a GPU and fails only when a GPU feature is used, with a message saying
what is missing.
"""
