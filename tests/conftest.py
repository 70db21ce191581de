import os

# The Triton interpreter must be chosen before triton.jit decorates anything: set it here, before any test
# module (or dype_rope.kernels) is imported. On a CUDA machine, export TRITON_INTERPRET=0 to run compiled.
os.environ.setdefault("TRITON_INTERPRET", "1")

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "default", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("thorough", deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
