"""The chip semantics, on one floor: numpy and numba only, no torch, no other package module.

Everything that decides what a deployed network computes lives here once: the compiled
LIF and network kernels (``lif``, ``network_kernels``), the input encoding rules
(``encoding``), the weight grid's formula (``weights``) and widths (``widths``), the state
levels (``levels``), the threshold scaling (``thresholds``) and the option checks
(``checks``). The float model, the emulator, the other backends and the tools call these.
Import the submodules directly (``from spiking_dqn.semantics import widths``).
"""
