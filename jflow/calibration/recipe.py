"""A quantization recipe: every setting of `jflow-export quantize` in one frozen, checked value.

The CLI builds one from its options, `quantize_artifact` takes one, and the studies in
benchmarks/quantization/ vary one field at a time (`dataclasses.replace`), so a study and the shipped
quantizer cannot drift apart. Every field is checked when the recipe is made: a bad one is one line
naming the CLI option, before any file is read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from jflow.artifact.precision import QUANTIZED
from jflow.calibration import FLOAT_BUDGET, KEEP_FLOAT, METHODS, SMOOTH_ALPHA
from jflow.errors import InputError

ORT_INT8 = ("static", "blockwise", "split")  # QuantRecipe.ort_int8
GEMM_NAME = re.compile(r"layers\.\d+\.(qkv|o|gate_up|down)|lm_head")  # as llm_graph.gemm_names names them


@dataclass(frozen=True)
class QuantRecipe:
    precision: str  # "int8" (W8A8 on every compute graph) or "int4" (LLM weights int4, the rest int8)
    method: str = "minmax"  # how int8 activation ranges are calibrated (METHODS)
    smooth: float = SMOOTH_ALPHA  # SmoothQuant migration strength for the LLM's int8 GEMMs; 0: off
    # int8: LLM GEMMs left float by role (llm_graph.FLOAT_GEMMS: down, o) or name; None: the most sensitive to W8A8,
    # measured (calibration.float_choice), while they hold at most float_budget of the layers' GEMM weights. On the
    # real weights' held-out text the roles win: down,o (34% of the weights) top-1 92.4% / KL 0.020 / ppl +1.2%,
    # measured at the same share 90.1% / 0.059 / +1.3%, at 20% 81.3% / 0.196 (results/int8_float_choice.json).
    keep_float: tuple[str, ...] | None = KEEP_FLOAT
    float_budget: float = FLOAT_BUDGET
    block_size: int = 32  # int4: weights per quantization block along the input dimension
    symmetric: bool = True  # int4: zero point 0 (the only grid jflow writes; a field so a study says so)
    exclude: tuple[str, ...] = ()  # node names left float beyond the roles: for one-graph studies only
    samples: int = 8  # calibration prompts and questions (each prompt a whole generation)
    # ODE steps of each calibration generation: its trajectory covers t from noise to image in 10 steps as in
    # 30 (6 sampled either way). On the real weights 10 scored top-1 87.7% / KL 0.0505 / ppl +5.0% vs 87.2% /
    # 0.0501 / +3.9% for 30, 118 of 121 LLM ranges within 10%; at full size 30 steps cost ~50 min on 2 cores.
    steps: int = 10
    # int4: GEMMs held at int8 instead of int4, chosen by measured sensitivity (calibration.sensitivity) while the
    # LLM's GEMM bytes stay within this many times plain int4's (1.0: plain int4). On the real weights 1.3 scored
    # top-1 76.3% / KL 0.286 / ppl +19% vs 55.3% / 0.881 / +50% for plain int4.
    int8_budget: float = 1.3
    int8_gemms: tuple[str, ...] | None = None  # int4: these GEMMs at int8 (names as the manifest lists them), unmeasured
    # int8: the ONNX Runtime LLM form's GEMMs. "static": the portable form's W8A8 QDQ (weights shared with it);
    # "blockwise": weights int8 in blocks of block_size, activations quantized per block inside ONNX Runtime's
    # MatMulNBits (accuracy level 4), as GenAI's int8; "split": blockwise for the prefill and decode, and a
    # second, static ORT form (llm_ort_step, weights shared with the portable form) for the ODE steps. The
    # portable form (TensorRT) keeps static QDQ in every case.
    # Measured (bench preset, 2-core Xeon, vs fp32): split runs the ODE step x2.40 and decode x2.61 with the text
    # as close to fp32 as GenAI's int8 (real weights: top-1 94.5% / KL 0.011, static 87.7% / 0.051); blockwise
    # alone runs the ODE step only x1.16 (MatMulNBits at many rows). Cost of split: the understanding prefill
    # (x0.93, static x2.17) and a second copy of the LLM's int8 weights on disk.
    ort_int8: str = "split"
    awq: bool = False  # int4: AWQ's activation-aware scales (calibration.awq) folded in before rounding

    def __post_init__(self) -> None:
        # Here, not at the top: llm_graph needs onnx, and the CLI reads this class's defaults on any machine.
        from jflow.calibration.llm_graph import FLOAT_GEMMS
        if self.precision not in QUANTIZED:
            raise InputError(f"--precision must be one of {', '.join(QUANTIZED)}, got {self.precision!r}")
        if self.method not in METHODS:
            raise InputError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not _whole(self.block_size) or self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise InputError(f"--block-size must be a power of two >= 16, got {self.block_size!r}")
        if not isinstance(self.smooth, (int, float)) or not 0 <= self.smooth < 1:
            raise InputError(f"--smooth must be a migration strength in [0, 1) (0: off), got {self.smooth!r}")
        if self.keep_float is not None and (isinstance(self.keep_float, str) or not all(
                k in FLOAT_GEMMS or (isinstance(k, str) and GEMM_NAME.fullmatch(k)) for k in self.keep_float)):
            raise InputError(f"--keep-float takes roles among {', '.join(FLOAT_GEMMS)} or GEMM names (layers.3.down, "
                             f"lm_head; comma-separated), none or measured, "
                             f"got {self.keep_float!r}")
        if isinstance(self.float_budget, bool) or not isinstance(self.float_budget, (int, float)) \
                or not 0 <= self.float_budget <= 1:
            raise InputError(f"--float-budget must be a share in [0, 1] of the layers' GEMM weights, "
                             f"got {self.float_budget!r}")
        if isinstance(self.int8_budget, bool) or not isinstance(self.int8_budget, (int, float)) \
                or not 1 <= self.int8_budget <= 2:
            raise InputError(f"--int8-budget must be a byte budget in [1, 2] times plain int4, got {self.int8_budget!r}")
        if self.int8_gemms is not None and (isinstance(self.int8_gemms, str)
                                            or not all(isinstance(g, str) for g in self.int8_gemms)):
            raise InputError(f"--int8-gemms takes GEMM names (comma-separated, e.g. lm_head,layers.0.down) or none, "
                             f"got {self.int8_gemms!r}")
        if self.ort_int8 not in ORT_INT8:
            raise InputError(f"--ort-int8 must be one of {', '.join(ORT_INT8)}, got {self.ort_int8!r}")
        if not isinstance(self.awq, bool):
            raise InputError(f"awq must be True or False (--awq / --no-awq), got {self.awq!r}")
        if self.symmetric is not True:
            raise InputError(f"symmetric must be True: jflow writes symmetric int4 only, got {self.symmetric!r}")
        if isinstance(self.exclude, str):
            raise InputError(f"exclude takes a tuple of node names, got the string {self.exclude!r}")
        for option, value in (("--samples", self.samples), ("--steps", self.steps)):
            if not _whole(value) or value < 1:
                raise InputError(f"{option} must be a whole number >= 1, got {value!r}")
        # Lists become tuples: the recipe stays hashable and equal to one spelled with tuples.
        if self.keep_float is not None:
            object.__setattr__(self, "keep_float", tuple(self.keep_float))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        if self.int8_gemms is not None:
            object.__setattr__(self, "int8_gemms", tuple(self.int8_gemms))

    @property
    def float_roles(self) -> tuple[str, ...]:
        """keep_float's roles (llm_graph.FLOAT_GEMMS)."""
        from jflow.calibration.llm_graph import FLOAT_GEMMS
        return tuple(k for k in self.keep_float or () if k in FLOAT_GEMMS)

    @property
    def float_names(self) -> tuple[str, ...]:
        """keep_float's GEMM names (llm_graph.gemm_names)."""
        return tuple(k for k in self.keep_float or () if k not in self.float_roles)

    @classmethod
    def of(cls, recipe: QuantRecipe | str, **settings) -> QuantRecipe:
        """`recipe` with `settings` (field=value) applied; a precision string starts from the defaults."""
        if isinstance(recipe, QuantRecipe):
            return replace(recipe, **settings) if settings else recipe
        return cls(recipe, **settings)


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
