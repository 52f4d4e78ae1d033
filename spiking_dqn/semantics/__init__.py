"""The chip semantics, on one floor: numpy and numba only, no torch, no other package module.

Everything that decides what a deployed network computes lives here once (the compiled
kernels, the input encoding rules, the weight widths, the state levels and the threshold
scaling): the float model, the emulator, the other backends and the tools call these.
Import the submodules directly (``from spiking_dqn.semantics import widths``).
"""
