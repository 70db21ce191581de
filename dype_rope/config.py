"""Typed, validated settings of a DyPE schedule.

A :class:`DyPEConfig` is frozen and checked on construction: a bad value raises at the call site that made
it, never later inside a forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

METHODS = ("none", "pi", "ntk", "yarn", "vision_yarn")
YARN_MODULATIONS = ("multiply", "power")
MSCALES = ("log", "log_sqrt")
# methods with an attention temperature (the mscale option) and with one that decays in t (start_sigma)
TEMPERATURE_METHODS = ("yarn", "vision_yarn")
DECAYING_TEMPERATURE_METHODS = ("vision_yarn",)

# Each method's own YaRN modulation when none is given: Dy-YaRN follows the paper ("multiply"); Vision-YaRN is
# ComfyUI-DyPE's method and raises its thresholds to kappa ("power"), as ComfyUI-DyPE does.
_DEFAULT_MODULATION = {"vision_yarn": "power"}

# lambda_s, lambda_t defaults per method (DyPE paper, Eq. 15, and the authors' code).
# Dy-YaRN with the authors' "multiply" modulation scales the thresholds by kappa = t**2;
# the ComfyUI-style "power" modulation raises them to kappa = 2 * t**2 (ComfyUI-DyPE's dype_scale and
# dype_exponent defaults), for Dy-YaRN and Vision-YaRN alike.
_DEFAULT_LAMBDAS = {
    ("none", "multiply"): (1.0, 1.0),
    ("none", "power"): (1.0, 1.0),
    ("pi", "multiply"): (2.0, 2.0),
    ("pi", "power"): (2.0, 2.0),
    ("ntk", "multiply"): (2.0, 2.0),
    ("ntk", "power"): (2.0, 2.0),
    ("yarn", "multiply"): (1.0, 2.0),
    ("yarn", "power"): (2.0, 2.0),
    ("vision_yarn", "multiply"): (1.0, 2.0),
    ("vision_yarn", "power"): (2.0, 2.0),
}


def _check_positive_finite(name: str, value: float, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value}")
    return value


@dataclass(frozen=True)
class DyPEConfig:
    """How the RoPE frequencies of a rescaled axis depend on the size ratio s and the diffusion time t.

    method:          "none" (plain RoPE), "pi", "ntk", "yarn" or "vision_yarn" (ComfyUI-DyPE's Vision-YaRN:
                     low frequencies by the axis's own ratio, high ones by NTK with the image's largest ratio,
                     an attention temperature that decays with t).
    dynamic:         True for DyPE (Dy-PI / Dy-NTK / Dy-YaRN), False for the static method.
    lambda_s, lambda_t: the scheduler kappa(t) = lambda_s * t ** lambda_t; None takes the method's default.
    yarn_modulation: "multiply" (the paper and the authors' code: thresholds * kappa) or
                     "power" (ComfyUI-DyPE: thresholds ** kappa); None takes the method's own: "multiply"
                     for yarn, "power" for vision_yarn.
    beta, gamma:     YaRN's (high, low) rotation thresholds of the two blends.
    mscale_coeff:    YaRN's attention temperature coefficient c.
    mscale:          the temperature's form (yarn, vision_yarn): "log", c ln(s) + 1, or "log_sqrt",
                     1 + c ln(s) / sqrt(s) (YaRN's isotropic form in ComfyUI-DyPE).
    start_sigma:     vision_yarn's temperature holds its start value while t > start_sigma and decays to 1
                     as (t / start_sigma) ** lambda_t below it; 1 = from the first step, 0 = never decays.
    """

    method: str = "yarn"
    dynamic: bool = True
    lambda_s: float | None = None
    lambda_t: float | None = None
    yarn_modulation: str | None = None
    beta: tuple[float, float] = (1.25, 0.75)
    gamma: tuple[float, float] = (16.0, 2.0)
    mscale_coeff: float = 0.1
    mscale: str = "log"
    start_sigma: float = 1.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            from .schedules import SCHEDULES  # late: user-registered schedules count too

            if not isinstance(self.method, str) or self.method not in SCHEDULES:
                raise ValueError(
                    f"unknown method {self.method!r}: expected one of {sorted(SCHEDULES)} "
                    "(register your own with dype_rope.register_schedule)"
                )
        if not isinstance(self.dynamic, bool):
            raise TypeError(f"dynamic must be a bool, got {type(self.dynamic).__name__}")
        modulation = self.yarn_modulation
        if modulation is None:
            modulation = _DEFAULT_MODULATION.get(self.method, "multiply")
            object.__setattr__(self, "yarn_modulation", modulation)
        if modulation not in YARN_MODULATIONS:
            raise ValueError(f"yarn_modulation must be one of {YARN_MODULATIONS}, got {modulation!r}")
        default_s, default_t = _DEFAULT_LAMBDAS.get((self.method, modulation), (1.0, 1.0))
        lam_s = default_s if self.lambda_s is None else _check_positive_finite("lambda_s", self.lambda_s)
        lam_t = default_t if self.lambda_t is None else _check_positive_finite("lambda_t", self.lambda_t, True)
        object.__setattr__(self, "lambda_s", lam_s)
        object.__setattr__(self, "lambda_t", lam_t)
        for name in ("beta", "gamma"):
            pair = tuple(getattr(self, name))
            if len(pair) != 2:
                raise ValueError(f"{name} must be a pair (high, low), got {pair}")
            hi = _check_positive_finite(f"{name}[0]", pair[0])
            lo = _check_positive_finite(f"{name}[1]", pair[1])
            if hi <= lo:
                raise ValueError(f"{name} must be (high, low) with high > low, got {pair}")
            object.__setattr__(self, name, (hi, lo))
        _check_positive_finite("mscale_coeff", self.mscale_coeff, allow_zero=True)
        self._check_temperature()

    def _check_temperature(self) -> None:
        """mscale and start_sigma: refused where they would silently do nothing (a built-in method without a
        temperature, or without one that decays); user-registered schedules may read them as they like."""
        if self.mscale not in MSCALES:
            raise ValueError(f"mscale must be one of {MSCALES}, got {self.mscale!r}")
        builtin = self.method in METHODS
        if self.mscale != "log" and builtin and self.method not in TEMPERATURE_METHODS:
            raise ValueError(
                f"mscale={self.mscale!r} sets YaRN's attention temperature, which method {self.method!r} does not "
                f"have; it applies to {TEMPERATURE_METHODS}"
            )
        start = _check_positive_finite("start_sigma", self.start_sigma, allow_zero=True)
        if start > 1:
            raise ValueError(f"start_sigma is a diffusion time from 0 to 1 (1 = from the first step), got {start}")
        object.__setattr__(self, "start_sigma", start)
        if start != 1.0 and builtin and (self.method not in DECAYING_TEMPERATURE_METHODS or not self.dynamic):
            what = "the static method" if self.method in DECAYING_TEMPERATURE_METHODS else f"method {self.method!r}"
            raise ValueError(
                f"start_sigma={start} starts the decay of Vision-YaRN's attention temperature, which {what} does "
                "not have; it applies to method='vision_yarn' with dynamic=True"
            )
