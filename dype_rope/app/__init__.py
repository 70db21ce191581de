"""The `dype-rope` command-line app: demo, plot, generate, bench.

Built on the library's public API; the library never imports from here. Figures need the `plot` extra
(matplotlib), everything else the `diffusers` extra.
"""
