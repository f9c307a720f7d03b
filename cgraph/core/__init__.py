"""The pure core: modes, descriptors, config, dispatch, bucketing and encoder planning.

Imports nothing but the standard library, NumPy, attrs and itself, so it runs (and is
tested) on any machine. The CUDA layer (cgraph.cuda) and the applications build on it.
"""
